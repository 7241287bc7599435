"""Benchmark: Kimi rate limits and cost against the emulator (real sockets, real pipeline, real DuckDB).

    .venv/bin/python bench/throughput.py [--only tier0 tier0-pack tier1 cost] [--corpus ../shared/corpus]

rate (tier0, tier0-pack, tier1): `pipeline.run_folder` over generated small text files, the emulator
    enforcing the tier's limits and our limiter set to the same tier. Both clocks are compressed by the
    same `time_scale` (an emulated minute lasts 60 x scale real seconds); latency is real (400 ms + 0.2 ms
    per output token). The emulator's request log gives requests per full emulated minute (from the first
    request), 429s, and documents lost. Share of the limit = mean requests per full minute / RPM.
cost: 5 tasks over one long corpus document (`requests.task_requests`: same system + document message,
    only the task differs) sent through `KimiClient` to the emulator, first with the prefix-aware order
    (the first alone, then the rest together, as `run/sequence.py` orders a document's tasks), then all 5
    at once (no caching-aware scheduling). Dollars from the emulator's billed usage with `costs.call_cost`.
    The lower bound (DESIGN §7): every prompt token billed once at the miss price, every re-read of the shared
    prefix at the hit price, plus the output actually billed.

Extracted text of the long documents is cached in bench/out/ (extraction of the PDF takes ~40 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kimidocs.core import tokens  # noqa: E402
from kimidocs.core.costs import call_cost, lower_bound  # noqa: E402
from kimidocs.core.mapreduce import CallOutcome, fan_out  # noqa: E402
from kimidocs.core.models import get_model  # noqa: E402
from kimidocs.core.planning import SINGLE_CALL, PageTokens, budget_for, plan_document  # noqa: E402
from kimidocs.core.records import Usage  # noqa: E402
from kimidocs.core.requests import ChatRequest, task_requests  # noqa: E402
from kimidocs.emulator import EmulatorConfig, EmulatorHandle, run_emulator_in_thread  # noqa: E402
from kimidocs.kimi.client import KimiClient  # noqa: E402
from kimidocs.kimi.limits import RateLimiter, RateLimits  # noqa: E402
from kimidocs.kimi.policy import apply_policy, should_stream  # noqa: E402
from kimidocs.run import pipeline  # noqa: E402
from kimidocs.run.backend import Backend  # noqa: E402
from kimidocs.run.settings import Settings  # noqa: E402
from prompts import load_profile  # noqa: E402

OUT = REPO / "bench" / "out"
LATENCY_MS = 400.0
LATENCY_PER_TOKEN_MS = 0.2
LONG_DOCS = ("pdf/The-Art-of-Public-Speaking.pdf", "docx/handbook-872p.docx")

# The five tasks of the cost profile: each asks for the summary schema, seen from a different angle.
TASKS = (
    "Describe the whole document above ($total_pages pages) as one JSON object following the schema.",
    "List the document's most important instructions or recommendations as key points, each with its "
    "pages, as one JSON object following the schema.",
    "Find every date and deadline in the document above and describe them as one JSON object following "
    "the schema; the summary says what the timeline is.",
    "Find every amount, figure and quantity in the document above and describe them as one JSON object "
    "following the schema; the summary says what they measure.",
    "Name the people, organisations and places the document above mentions, as one JSON object following "
    "the schema; the summary says how they relate.",
)


# ---------------------------------------------------------------------------------------------- rate


# name: (tier, time_scale, documents, words per document, pack, doc workers, limiter margin in real s)
# The margin covers the real delay between our admission and the emulator's time stamp; the emulator
# shares this process (and its GIL) with the pipeline, so that delay is longer here than over a network.
RATE_SETTINGS: dict[str, tuple[str, float, int, int, bool, int, float]] = {
    "tier0": ("tier0", 0.1, 34, 400, False, 4, 0.3),
    "tier0-pack": ("tier0", 0.1, 150, 400, True, 8, 0.3),
    "tier1": ("tier1", 0.4, 700, 300, False, 24, 0.5),
}

_TEXT = (
    "the supplier shall deliver goods invoice payment within thirty days after receipt notice party "
    "agreement clause schedule liability termination warranty service level report quarter revenue "
    "customer order shipment amount total price tax period renewal annex contract manager department"
)
_WORDS = _TEXT.split(" ")


def _write_small_docs(folder: Path, count: int, words: int) -> None:
    """`count` distinct small text files (~1.3 tokens per word), each with a title, a date and an amount."""
    import random

    rng = random.Random(count * 7919 + words)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = []
        while sum(len(s.split()) for s in body) < words:
            n = rng.randint(8, 20)
            body.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
        day = 1 + i % 28
        text = (
            f"Service report number {i}\n\nDate: 2026-03-{day:02d}. Total amount EUR {1000 + 37 * i}.00.\n\n"
            + "\n\n".join(" ".join(body[j : j + 4]) for j in range(0, len(body), 4))
        )
        (folder / f"report-{i:04d}.txt").write_text(text, encoding="utf-8")


def _minute_counts(times: list[float], minute_s: float) -> list[int]:
    """Requests in each full emulated minute from the first request (the last, partial one left out)."""
    if not times:
        return []
    t0, t_end = min(times), max(times)
    full = int((t_end - t0) // minute_s)
    counts = [0] * full
    for t in times:
        k = int((t - t0) // minute_s)
        if k < full:
            counts[k] += 1
    return counts


def run_rate(name: str) -> dict[str, Any]:
    tier, scale, n_docs, words, pack, workers, margin = RATE_SETTINGS[name]
    limits = RateLimits.for_tier(tier)
    work = Path(tempfile.mkdtemp(prefix=f"kimidocs-bench-{name}-"))
    _write_small_docs(work / "docs", n_docs, words)
    config = EmulatorConfig(
        tier=tier, time_scale=scale, latency_ms=LATENCY_MS, latency_per_token_ms=LATENCY_PER_TOKEN_MS
    )
    with run_emulator_in_thread(config) as emu:
        limiter = RateLimiter(limits, time_scale=scale, window_margin_s=margin)
        client = KimiClient(emu.base_url, emu.api_key, limiter=limiter, max_retries=6)
        backend = Backend(client=client, name="emulator", base_url=emu.base_url)
        db = work / "k.duckdb"
        settings = Settings(
            KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, KIMIDOCS_DB=str(db), KIMIDOCS_TIER=tier
        )
        options = pipeline.RunOptions(folder=str(work / "docs"), db=str(db), concurrency=workers, pack=pack)
        t0 = time.perf_counter()
        report = pipeline.run_folder(options, settings, backend=backend)
        wall = time.perf_counter() - t0
        chat = emu.requests("/chat/completions")
    ok = [e for e in chat if e["status"] == 200]
    limited = [e for e in chat if e["status"] == 429]
    minute_s = 60.0 * scale
    counts = _minute_counts([e["time"] for e in ok], minute_s)
    span_min = (max(e["time"] for e in ok) - min(e["time"] for e in ok)) / minute_s if ok else 0.0
    docs_ok = report.count("ok")
    return {
        "name": name,
        "tier": tier,
        "limits": limits,
        "scale": scale,
        "pack": pack,
        "docs": n_docs,
        "docs_ok": docs_ok,
        "docs_failed": report.count("failed", "skipped"),
        "failed_by_429": sum(1 for o in report.outcomes if o.error_type == "RateLimited"),
        "requests": len(ok),
        "http_429": len(limited),
        "minute_counts": counts,
        "rpm_mean": sum(counts) / len(counts) if counts else float("nan"),
        "docs_per_min": docs_ok / span_min if span_min else float("nan"),
        "packed_saved": getattr(report, "packed_requests_saved", 0),
        "max_concurrency": emu.stats().get("max_concurrency"),
        "wall_s": wall,
        "cache_share": report.cache_hit_share,
    }


# ---------------------------------------------------------------------------------------------- cost


def _pages(corpus: Path, name: str) -> list[tuple[int, str]]:
    """The document's pages, extracted once and cached as JSON in bench/out/."""
    import extractors

    cache = OUT / "text-cache" / (Path(name).name + ".json")
    if cache.exists():
        return [(n, t) for n, t in json.loads(cache.read_text(encoding="utf-8"))]
    doc = extractors.extract(str(corpus / name))
    pages = [(p.number, p.text) for p in doc.pages]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(pages, ensure_ascii=False), encoding="utf-8")
    return pages


def _send(
    emu: EmulatorHandle, model_id: str
) -> tuple[Callable[[ChatRequest], CallOutcome], list, KimiClient]:
    """A `call` for mapreduce's schedulers: policy + client, usage kept in `used` (in arrival order)."""
    model = get_model(model_id)
    client = KimiClient(emu.base_url, emu.api_key, max_retries=2, timeout_s=600)
    used: list[tuple[ChatRequest, Usage]] = []

    def call(request: ChatRequest) -> CallOutcome:
        body = apply_policy(dict(request.body), model)
        result = client.chat(
            body,
            stream=should_stream(request.prompt_tokens_est, request.max_tokens),
            tokens_est=request.prompt_tokens_est + request.max_tokens,
        )
        used.append((request, result.usage))
        return CallOutcome(result.content, result.finish_reason)

    return call, used, client


def run_cost(corpus: Path, name: str, model_id: str = "kimi-k2.5") -> dict[str, Any]:
    model = get_model(model_id)
    profile = load_profile("summary")
    pages = _pages(corpus, name)
    counts = tokens.count_many([t for _, t in pages])
    plan = plan_document(
        [PageTokens(n, t, c) for (n, t), c in zip(pages, counts, strict=True)], budget_for(model, profile)
    )
    if plan.strategy != SINGLE_CALL:
        raise SystemExit(f"{name}: does not fit one {model_id} call ({plan.strategy}); pick another document")
    tasks = [t.replace("$total_pages", str(len(pages))) for t in TASKS]
    requests = task_requests(profile, model, plan.chunks[0], plan.budget, tasks, pages_total=len(pages))
    assert len({r.prefix_key for r in requests}) == 1
    out: dict[str, Any] = {"name": name, "pages": len(pages), "doc_tokens_o200k": sum(counts)}
    with run_emulator_in_thread(EmulatorConfig(latency_ms=LATENCY_MS)) as emu:
        prefix_kimi = KimiClient(emu.base_url, emu.api_key).estimate_tokens(
            model.id, list(requests[0].body["messages"][:2])
        )
        out["prefix_tokens"] = prefix_kimi
        for mode in ("prefix-aware", "all at once"):
            emu.reset()  # an empty cache for each mode
            call, used, client = _send(emu, model_id)
            t0 = time.perf_counter()
            if mode == "prefix-aware":
                fan_out(list(requests), call, len(requests), first_alone=True)  # as run/sequence.py does
            else:
                fan_out(list(requests), call, len(requests), first_alone=False)
            wall = time.perf_counter() - t0
            client.close()
            usages = [u for _, u in used]
            prompt = sum(u.prompt_tokens for u in usages)
            cached = sum(u.cached_tokens for u in usages)
            output = sum(u.completion_tokens for u in usages)
            cost = sum(call_cost(u, model) for u in usages)
            # DESIGN §7: each prompt token once at the miss price, each prefix re-read at the hit price.
            rereads = len(usages) - 1
            unique = prompt - rereads * prefix_kimi
            bound = (
                unique * model.price_cache_miss
                + rereads * prefix_kimi * model.price_cache_hit
                + output * model.price_output
            ) / 1e6
            strict = lower_bound(unique, output, model)  # every token read once, nothing re-read
            out[mode] = {
                "calls": len(usages),
                "prompt": prompt,
                "cached": cached,
                "output": output,
                "cost": cost,
                "bound": bound,
                "strict_bound": strict,
                "ratio": cost / bound,
                "hit_share": cached / prompt if prompt else 0.0,
                "per_call_cached": [u.cached_tokens for u in usages],
                "emulator_spent": emu.stats()["spent_usd"],
                "wall_s": wall,
            }
    return out


# ---------------------------------------------------------------------------------------------- output


def rate_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| setting | limits (conc / RPM / TPM) | time scale | documents ok / total | requests (200) "
        "| requests per full minute | mean RPM / limit | docs per minute | 429s seen | docs lost to 429 "
        "| requests saved by packing | wall s |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lim: RateLimits = r["limits"]
        share = r["rpm_mean"] / lim.rpm if lim.rpm else float("nan")
        counts = r["minute_counts"]
        shown = ", ".join(map(str, counts[:12])) + (" ..." if len(counts) > 12 else "")
        lines.append(
            f"| {r['name']} | {lim.concurrency} / {lim.rpm} / {lim.tpm:,} | {r['scale']:g} "
            f"| {r['docs_ok']} / {r['docs']} | {r['requests']} | {shown} | {r['rpm_mean']:.1f} / {lim.rpm} "
            f"= {share:.0%} | {r['docs_per_min']:.1f} | {r['http_429']} | {r['failed_by_429']} "
            f"| {r['packed_saved']} | {r['wall_s']:.0f} |"
        )
    return lines


def cost_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| document | o200k tokens | shared prefix (Kimi tokens) | scheduling | calls | prompt tokens "
        "| cached | cache-hit share | output | cost $ | lower bound $ | cost / bound | read once $ |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for mode in ("prefix-aware", "all at once"):
            m = r[mode]
            lines.append(
                f"| {Path(r['name']).name} | {r['doc_tokens_o200k']:,} | {r['prefix_tokens']:,} | {mode} "
                f"| {m['calls']} | {m['prompt']:,} | {m['cached']:,} | {m['hit_share']:.1%} "
                f"| {m['output']:,} "
                f"| {m['cost']:.4f} | {m['bound']:.4f} | {m['ratio']:.3f} | {m['strict_bound']:.4f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--only", nargs="*", default=[*RATE_SETTINGS, "cost"])
    args = parser.parse_args()
    tokens.encoding()
    rate_rows, cost_rows = [], []
    for name in args.only:
        if name in RATE_SETTINGS:
            row = run_rate(name)
            print(json.dumps({k: v for k, v in row.items() if k != "limits"}, default=str), file=sys.stderr)
            rate_rows.append(row)
    if "cost" in args.only:
        for doc in LONG_DOCS:
            row = run_cost(Path(args.corpus), doc)
            print(json.dumps(row, default=str), file=sys.stderr)
            cost_rows.append(row)
    lines: list[str] = []
    if rate_rows:
        lines += [*rate_markdown(rate_rows), ""]
    if cost_rows:
        lines += cost_markdown(cost_rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
