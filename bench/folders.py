"""Benchmark: prefix-cache scheduling of whole runs against the emulator (issue 14 items 1, 2, 5).

    .venv/bin/python bench/folders.py [--corpus ../shared/corpus] [--only folder book markup]

folder: `pipeline.run_folder` over 20 small corpus documents (one call each), kimi-k2.5, at a realistic
    latency (LATENCY_MS before the first byte + LATENCY_PER_TOKEN_MS per output token), twice: without a
    run warm-up (`KIMIDOCS_WAIT_MIN_SAVING_USD` too high to ever wait: what runs did before) and with the
    default rule (the run's first call alone, then the folder fans out). Cost against the lower bound
    (DESIGN §7): every document token once at the miss price, the shared system prompt once at the miss
    price and at the hit price afterwards, plus the output billed. Cached share of the system prompt's
    whole blocks = what calls read from the cache of those blocks / (calls x those blocks).
book: the 934-page public-speaking-x2.pdf alone in a run, map stage wall time (first map call arrival to
    last map call end, from the emulator log) with the first map call always alone (threshold 0: the
    rule before) and with the default rule (its map calls share only the system prompt: together).
markup: o200k tokens per page of the page markup, and of the system prompt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kimidocs.core import markup, tokens  # noqa: E402
from kimidocs.core.models import get_model  # noqa: E402
from kimidocs.core.planning import budget_for  # noqa: E402
from kimidocs.core.schedule import system_tokens, whole_blocks  # noqa: E402
from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread  # noqa: E402
from kimidocs.run import pipeline  # noqa: E402
from kimidocs.run.settings import Settings  # noqa: E402
from prompts import load_profile  # noqa: E402

LATENCY_MS = 1_500.0  # time to first token of a short prompt on a loaded API
LATENCY_PER_TOKEN_MS = 20.0  # ~50 output tokens/s
NEVER_WAIT = 1e9  # a threshold no saving reaches: no run warm-up, no group waits
ALWAYS_WAIT = 0.0  # any saving pays: every group's first call alone

# 20 small text documents of the corpus (1-18 pages each), PDF and DOCX.
SMALL_DOCS = (
    "pdf/minimal-document.pdf",
    "pdf/crazyones.pdf",
    "pdf/normal_4pages.pdf",
    "pdf/multi_page.pdf",
    "pdf/code_and_formula.pdf",
    "pdf/amt_handbook_sample.pdf",
    "pdf/2305.03393v1-pg9.pdf",
    "pdf/redp5110_sampled.pdf",
    "pdf/multicolumn.pdf",
    "pdf/nics-background-checks-2015-11.pdf",
    "pdf/issue-336-example.pdf",
    "pdf/right_to_left_01.pdf",
    "pdf/copy-protected.pdf",
    "docx/word_sample.docx",
    "docx/word_tables.docx",
    "docx/docx_lists.docx",
    "docx/lorem_ipsum.docx",
    "docx/testWORD_various.docx",
    "docx/docx-tables.docx",
    "docx/equations.docx",
)
BOOK = "pdf/public-speaking-x2.pdf"


def _run(folder: Path, threshold: float, config: EmulatorConfig) -> tuple[pipeline.RunReport, list, float]:
    work = Path(tempfile.mkdtemp(prefix="kimidocs-bench-folders-"))
    with run_emulator_in_thread(config) as emu:
        db = work / "k.duckdb"
        settings = Settings(
            KIMI_API_KEY=emu.api_key,
            KIMI_BASE_URL=emu.base_url,
            KIMIDOCS_DB=str(db),
            KIMIDOCS_WAIT_MIN_SAVING_USD=threshold,
            _env_file=None,
        )
        options = pipeline.RunOptions(folder=str(folder), db=str(db), concurrency=8)
        t0 = time.perf_counter()
        report = pipeline.run_folder(options, settings)
        wall = time.perf_counter() - t0
        chats = sorted(emu.requests("/chat/completions"), key=lambda e: e["time"])
    shutil.rmtree(work, ignore_errors=True)
    return report, chats, wall


def run_folder_modes(corpus: Path) -> list[dict[str, Any]]:
    model = get_model("kimi-k2.5")
    folder = Path(tempfile.mkdtemp(prefix="kimidocs-bench-small-"))
    for rel in SMALL_DOCS:
        shutil.copy(corpus / rel, folder / Path(rel).name)
    config = EmulatorConfig(latency_ms=LATENCY_MS, latency_per_token_ms=LATENCY_PER_TOKEN_MS)
    # The system message in Kimi tokens, as the emulator bills it (our count x token_ratio, role markers in).
    system_raw = system_tokens(load_profile("summary").system)
    system_kimi = -(-system_raw * config.token_ratio // 1)
    blocks = whole_blocks(system_raw)
    rows = []
    for mode, threshold in (("no warm-up (before)", NEVER_WAIT), ("rule, default (after)", None)):
        report, chats, wall = _run(
            folder,
            threshold if threshold is not None else Settings(_env_file=None).wait_min_saving_usd,
            config,
        )
        ok = [e for e in chats if e["status"] == 200]
        prompt = sum(e["prompt_tokens"] for e in ok)
        cached = sum(e["cached_tokens"] for e in ok)
        output = sum(e["completion_tokens"] for e in ok)
        n = len(ok)
        cost = (
            (prompt - cached) * model.price_cache_miss
            + cached * model.price_cache_hit
            + output * model.price_output
        ) / 1e6
        bound = (
            (prompt - (n - 1) * system_kimi) * model.price_cache_miss
            + (n - 1) * system_kimi * model.price_cache_hit
            + output * model.price_output
        ) / 1e6
        first_end = ok[0]["time"] + ok[0]["duration_ms"] / 1000
        rows.append(
            {
                "mode": mode,
                "docs_ok": report.count("ok"),
                "docs": len(report.outcomes),
                "calls": n,
                "alone_first": all(e["time"] >= first_end - 0.005 for e in ok[1:]),
                "max_conc": max(e["concurrency_at_arrival"] for e in ok) + 1,
                "prompt": prompt,
                "cached": cached,
                "system_cached_share": sum(min(e["cached_tokens"], blocks) for e in ok) / (n * blocks),
                "output": output,
                "cost": cost,
                "bound": bound,
                "ratio": cost / bound,
                "hit_share": cached / prompt,
                "wall_s": wall,
                "decision": report.scheduling[0] if report.scheduling else "",
            }
        )
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def run_book(corpus: Path) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="kimidocs-bench-book-"))
    shutil.copy(corpus / BOOK, folder / Path(BOOK).name)
    config = EmulatorConfig(latency_ms=LATENCY_MS, latency_per_token_ms=LATENCY_PER_TOKEN_MS)
    partial = budget_for(get_model("kimi-k2.5"), load_profile("summary")).partial_output_tokens
    rows = []
    for mode, threshold in (("first map call alone (before)", ALWAYS_WAIT), ("rule, default (after)", None)):
        report, chats, wall = _run(
            folder,
            threshold if threshold is not None else Settings(_env_file=None).wait_min_saving_usd,
            config,
        )
        maps = [e for e in chats if e["status"] == 200 and e["max_tokens"] == partial]
        start = min(e["time"] for e in maps)
        end = max(e["time"] + e["duration_ms"] / 1000 for e in maps)
        rows.append(
            {
                "mode": mode,
                "status": report.outcomes[0].status,
                "map_calls": len(maps),
                "calls": len(chats),
                "map_wall_s": end - start,
                "run_wall_s": wall,
                "cost": report.cost_usd,
                "cached": sum(e["cached_tokens"] for e in chats),
                "decision": next((d for d in report.scheduling if " map: " in d), ""),
            }
        )
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def markup_numbers() -> dict[str, Any]:
    """Tokens per page of the page markup (on a few real texts) and of the system prompt."""
    texts = ["The rent is due on the first day of each month.", "Payment: EUR 1,200.00", "第一章 总则"]
    per_page = []
    for n in (7, 123, 1234):
        for t in texts:
            per_page.append(tokens.count(markup.page_block(n, t) + "\n") - tokens.count(t))
    return {
        "page_markup_tokens": sum(per_page) / len(per_page),
        "system_tokens": tokens.count(load_profile("summary").system),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--only", nargs="*", default=["markup", "folder", "book"])
    args = parser.parse_args()
    corpus = Path(args.corpus)
    tokens.encoding()
    lines: list[str] = []
    if "markup" in args.only:
        m = markup_numbers()
        print(json.dumps(m), file=sys.stderr)
        lines += [
            f"page markup: {m['page_markup_tokens']:.1f} o200k tokens per page; "
            f"system prompt: {m['system_tokens']} o200k tokens",
            "",
        ]
    if "folder" in args.only:
        rows = run_folder_modes(corpus)
        lines += [
            "| scheduling | docs ok | calls | first call alone | max in flight | prompt tokens | cached "
            "| cache-hit share | system prompt blocks cached | output | cost $ | lower bound $ "
            "| cost / bound | wall s |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            print(json.dumps(r), file=sys.stderr)
            lines.append(
                f"| {r['mode']} | {r['docs_ok']} / {r['docs']} | {r['calls']} "
                f"| {'yes' if r['alone_first'] else 'no'} "
                f"| {r['max_conc']} | {r['prompt']:,} | {r['cached']:,} | {r['hit_share']:.1%} "
                f"| {r['system_cached_share']:.1%} | {r['output']:,} | {r['cost']:.5f} | {r['bound']:.5f} "
                f"| {r['ratio']:.3f} | {r['wall_s']:.1f} |"
            )
        lines += ["", *(f"- {r['mode']}: {r['decision']}" for r in rows if r["decision"]), ""]
    if "book" in args.only:
        rows = run_book(corpus)
        lines += [
            "| scheduling | status | map calls | calls | map stage wall s | run wall s | cached tokens "
            "| cost $ |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            print(json.dumps(r), file=sys.stderr)
            lines.append(
                f"| {r['mode']} | {r['status']} | {r['map_calls']} | {r['calls']} | {r['map_wall_s']:.1f} "
                f"| {r['run_wall_s']:.1f} | {r['cached']:,} | {r['cost']:.4f} |"
            )
        lines += ["", *(f"- {r['mode']}: {r['decision']}" for r in rows if r["decision"])]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
