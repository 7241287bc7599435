"""Benchmark: one folder of small corpus documents, interactive vs batch mode, against the emulator.

    .venv/bin/python bench/batch.py [--corpus ../shared/corpus] [--latency-ms 400] [--time-scale 0.05]

The corpus's small DOCX files (every `docx/*.docx` but the 872-page handbook) are run with
`pipeline.run_folder` on kimi-k2.5, once in real time (`--mode interactive`) and once through the
emulator's Batch API (`--mode batch`), each on a fresh emulator state and a fresh database. The batch
latency knobs are the emulator's defaults (validating 2 s, in_progress 60 s, finalizing 2 s) times
`--time-scale`. Cost = the calls' `cost_usd` as stored (batch lines at the batch price); the ratio is
batch cost / interactive cost (target <= 0.61). Interactive calls get prefix-cache hits on the shared
system prompt; whether the cache serves lines inside a batch is undocumented, so batch mode assumes not
(the emulator's default, `batch_cache=False`). A third run with `batch_cache=True` shows the other case.
"list $" = the same tokens at the real-time price with no cache hits (what the batch factor applies to).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kimidocs.core.costs import usd  # noqa: E402
from kimidocs.core.models import get_model  # noqa: E402
from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread  # noqa: E402
from kimidocs.run import pipeline  # noqa: E402
from kimidocs.run.settings import Settings  # noqa: E402

MODEL = "kimi-k2.5"
SKIP = {"handbook-872p.docx"}


def run_mode(emu: Any, folder: Path, db: Path, mode: str, poll_s: float) -> dict[str, Any]:
    settings = Settings(
        KIMI_API_KEY=emu.api_key,
        KIMI_BASE_URL=emu.base_url,
        KIMIDOCS_DB=str(db),
        KIMIDOCS_BATCH_POLL_S=poll_s,
        KIMIDOCS_BATCH_TIMEOUT_S=600,
        _env_file=None,
    )
    options = pipeline.RunOptions(folder=str(folder), db=str(db), model=MODEL, mode=mode)
    t0 = time.perf_counter()
    report = pipeline.run_folder(options, settings)
    wall = time.perf_counter() - t0
    with duckdb.connect(str(db), read_only=True) as con:
        calls, prompt, cached, output, cost = con.execute(
            "SELECT count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), sum(cost_usd) "
            "FROM calls WHERE status <> 'error'"
        ).fetchone()
        batches = con.execute("SELECT count(*) FROM batches").fetchone()[0]
    return {
        "docs_ok": report.count("ok"),
        "docs": len(report.outcomes),
        "calls": calls,
        "batches": batches,
        "prompt": prompt or 0,
        "cached": cached or 0,
        "output": output or 0,
        "cost": cost or 0.0,
        "list": usd(prompt or 0, 0, output or 0, get_model(MODEL)),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--latency-ms", type=float, default=400.0)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kimidocs-bench-batch-") as tmp:
        work = Path(tmp)
        folder = work / "docs"
        folder.mkdir()
        for path in sorted((Path(args.corpus) / "docx").glob("*.docx")):
            if path.name not in SKIP:
                shutil.copyfile(path, folder / path.name)
        runs = (("interactive", "interactive", False), ("batch", "batch", False))
        runs += (("batch, cache served in batches", "batch", True),)
        for n, (label, mode, cache) in enumerate(runs):
            config = EmulatorConfig(latency_ms=args.latency_ms, time_scale=args.time_scale, batch_cache=cache)
            with run_emulator_in_thread(config) as emu:
                rows[label] = run_mode(emu, folder, work / f"run{n}.duckdb", mode, poll_s=0.2)
            print(f"{label}: {rows[label]}", file=sys.stderr, flush=True)
    scale = args.time_scale
    print(
        f"{rows['interactive']['docs']} documents, kimi-k2.5, latency {args.latency_ms:.0f} ms per call, "
        f"batch phases 2 s + 60 s + 2 s x time_scale {scale} = {64 * scale:.1f} s per batch\n"
    )
    print(
        "| mode | documents ok | calls | batches | prompt tokens | cached | output | list $ | cost $ "
        "| cost / interactive | wall s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    base = rows["interactive"]["cost"] or 1.0
    for label, m in rows.items():
        print(
            f"| {label} | {m['docs_ok']} / {m['docs']} | {m['calls']} | {m['batches']} | {m['prompt']:,} "
            f"| {m['cached']:,} | {m['output']:,} | {m['list']:.5f} | {m['cost']:.5f} "
            f"| {m['cost'] / base:.3f} | {m['wall_s']:.1f} |"
        )
    print(f"\ncost ratio batch / interactive: {rows['batch']['cost'] / base:.3f} (target <= 0.61)")


if __name__ == "__main__":
    main()
