"""Benchmark: a 5-task declared profile over long documents, through the whole pipeline, against the emulator.

    .venv/bin/python bench/profiles.py [--corpus ../shared/corpus] [--latency-ms 400]

A user profile of five tasks (written to a temporary folder on KIMIDOCS_PROFILES, outside the package) is
run with `pipeline.run_folder` on kimi-k2.5 over

    The-Art-of-Public-Speaking.pdf   one call per task (222k tokens)
    handbook-872p.docx               one call per task (173k tokens)
    public-speaking-x2.pdf           map-reduce: one map pass per task over the same chunks

once with prefix-aware scheduling (the first task alone, then the others; KIMIDOCS_PREFIX_SCHEDULING=1)
and once with it off (all tasks at once), each mode on an empty emulator cache. Every request body and
its billed usage is recorded at the client. Lower bound (DESIGN §7): every prompt token once at the miss
price, every re-read of a shared prefix (system + document or chunk, Kimi's count of it) at the hit
price, plus the output billed. Cost / bound near 1.0 means tasks 2..N paid only the hit price for the
document.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kimidocs.core.costs import call_cost  # noqa: E402
from kimidocs.core.models import get_model  # noqa: E402
from kimidocs.core.records import Usage  # noqa: E402
from kimidocs.core.requests import prefix_key_of  # noqa: E402
from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread  # noqa: E402
from kimidocs.kimi.client import KimiClient  # noqa: E402
from kimidocs.run import pipeline  # noqa: E402
from kimidocs.run.backend import Backend  # noqa: E402
from kimidocs.run.settings import Settings  # noqa: E402

DOCS = ("pdf/The-Art-of-Public-Speaking.pdf", "docx/handbook-872p.docx", "pdf/public-speaking-x2.pdf")
MODEL = "kimi-k2.5"

PROFILE = """
description = "Five questions to any long document"
instructions = "The documents are long books, handbooks and manuals."

[[tasks]]
name = "overview"
instructions = "Give the document's title, author and a short summary."
[tasks.fields]
title = {type = "string", cite = true}
author = {type = "string", cite = true}
summary = {type = "text", required = true}

[[tasks]]
name = "people"
instructions = "List the people and organisations the document names, with their role."
[tasks.fields]
people = {type = "list", cite = true, fields = {name = {type = "string", required = true}, role = "string"}}

[[tasks]]
name = "dates"
instructions = "List the dates and periods the document gives, with what happens then."
[tasks.fields]
dates = {type = "list", cite = true, fields = {date = {type = "date", required = true}, what = "text"}}

[[tasks]]
name = "advice"
instructions = "List the document's main recommendations or instructions to the reader."
[tasks.fields]
advice = {type = "list", cite = true, fields = {advice = {type = "text", required = true}}}

[[tasks]]
name = "figures"
instructions = "List the figures and amounts the document states, with their unit."
[tasks.fields]
[tasks.fields.figures]
type = "list"
cite = true
fields = {name = {type = "string", required = true}, value = "number", unit = "string"}
"""


class RecordingClient(KimiClient):
    """The Kimi client, recording each call's prefix (system + document message) and billed usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, list[dict[str, Any]], Usage]] = []
        self._lock = threading.Lock()

    def chat(self, body: dict[str, Any], **kwargs: Any) -> Any:
        result = super().chat(body, **kwargs)
        with self._lock:
            self.calls.append((prefix_key_of(body), list(body["messages"][:2]), result.usage))
        return result


def run_mode(emu: Any, folder: Path, db: Path, profiles: Path, prefix_aware: bool) -> dict[str, Any]:
    model = get_model(MODEL)
    settings = Settings(
        KIMI_API_KEY=emu.api_key,
        KIMI_BASE_URL=emu.base_url,
        KIMIDOCS_DB=str(db),
        KIMIDOCS_PROFILES=str(profiles),
        KIMIDOCS_PREFIX_SCHEDULING=prefix_aware,
    )
    client = RecordingClient(emu.base_url, emu.api_key)
    backend = Backend(client, "emulator", emu.base_url)
    options = pipeline.RunOptions(folder=str(folder), db=str(db), profile="five", model=MODEL, concurrency=5)
    t0 = time.perf_counter()
    report = pipeline.run_folder(options, settings, backend=backend)
    wall = time.perf_counter() - t0
    outcome = report.outcomes[0]
    if outcome.status != "ok":
        raise SystemExit(f"{folder}: {outcome.status} {outcome.error_type} {outcome.message}")
    prefix_tokens: dict[str, int] = {}
    seen: dict[str, int] = {}
    counter = KimiClient(emu.base_url, emu.api_key)  # the run closed its own client
    for key, messages, _usage in client.calls:
        seen[key] = seen.get(key, 0) + 1
        if key not in prefix_tokens:
            prefix_tokens[key] = counter.estimate_tokens(MODEL, messages)
    counter.close()
    usages = [u for _k, _m, u in client.calls]
    prompt = sum(u.prompt_tokens for u in usages)
    cached = sum(u.cached_tokens for u in usages)
    output = sum(u.completion_tokens for u in usages)
    reread = sum((n - 1) * prefix_tokens[k] for k, n in seen.items())
    bound = (
        (prompt - reread) * model.price_cache_miss
        + reread * model.price_cache_hit
        + output * model.price_output
    ) / 1e6
    cost = sum(call_cost(u, model) for u in usages)
    return {
        "strategy": outcome.strategy,
        "pages": outcome.pages,
        "calls": len(usages),
        "prefixes": len(seen),
        "prompt": prompt,
        "cached": cached,
        "output": output,
        "cost": cost,
        "bound": bound,
        "ratio": cost / bound,
        "hit_share": cached / prompt if prompt else 0.0,
        "wall_s": wall,
    }


def markdown(rows: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| document | strategy | scheduling | calls | prompt tokens | cached | cache-hit share | output "
        "| cost $ | lower bound $ | cost / bound | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, mode, m in rows:
        lines.append(
            f"| {name} | {m['strategy']} ({m['pages']} pages) | {mode} | {m['calls']} | {m['prompt']:,} "
            f"| {m['cached']:,} | {m['hit_share']:.1%} | {m['output']:,} | {m['cost']:.4f} "
            f"| {m['bound']:.4f} | {m['ratio']:.3f} | {m['wall_s']:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--latency-ms", type=float, default=400.0)
    args = parser.parse_args()
    rows: list[tuple[str, str, dict[str, Any]]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kimidocs-bench-profiles-") as tmp:
        work = Path(tmp)
        (work / "profiles" / "five").mkdir(parents=True)
        (work / "profiles" / "five" / "profile.toml").write_text(PROFILE)
        with run_emulator_in_thread(EmulatorConfig(latency_ms=args.latency_ms)) as emu:
            for i, rel in enumerate(DOCS):
                folder = work / f"doc{i}"
                folder.mkdir()
                shutil.copyfile(Path(args.corpus) / rel, folder / Path(rel).name)
                for mode, aware in (("prefix-aware", True), ("all at once", False)):
                    emu.reset()  # an empty cache for each mode
                    db = work / f"doc{i}-{'on' if aware else 'off'}.duckdb"
                    m = run_mode(emu, folder, db, work / "profiles", aware)
                    rows.append((Path(rel).name, mode, m))
                    print(f"{Path(rel).name} {mode}: {m}", file=sys.stderr, flush=True)
    print("\n".join(markdown(rows)))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
