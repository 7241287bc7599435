"""Benchmark: extract + count + plan the longest corpus documents and a generated 3M-token one.

    .venv/bin/python bench/plan.py [--corpus ../shared/corpus] [--markdown]

Each document runs in a fresh process (spawn) so its peak RSS is its own. Per document: extraction
time, token counting speed on one core (MB of UTF-8 text per second, pages counted one after the
other), planning time for several windows, and the plan's calls and estimated cost beside the lower
bound (every document token once at the miss price). Nothing here calls a model.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = ("pdf/The-Art-of-Public-Speaking.pdf", "pdf/public-speaking-x2.pdf", "docx/handbook-872p.docx")
GENERATED = "generated-3M-tokens"
MODELS = ("kimi-k2.5", "kimi-k3", "kimidocs-test-8k")


_VOCAB = """
the of and to in a is that for it as was with be by on not he this are or his from at which but have an
they you were her she there been one all we their has would when if will more no out so said what up its
about than into them can only other new some could time these two may then do first any like agreement
supplier invoice payment delivery contract party clause annex schedule liability notice
"""


def _generated_pages(target_tokens: int = 3_000_000, page_words: int = 700) -> list[tuple[int, str]]:
    """A deterministic English-like document of about `target_tokens` o200k tokens."""
    rng = random.Random(20260101)
    vocab = _VOCAB.split()
    pages, words_per_token = [], 0.95  # measured: ~1.08 o200k tokens per word of this text
    n_pages = int(target_tokens * words_per_token / page_words) + 1
    for number in range(1, n_pages + 1):
        sentences, count = [], 0
        while count < page_words:
            n = rng.randint(6, 22)
            words = [rng.choice(vocab) for _ in range(n)]
            words[0] = words[0].capitalize()
            sentences.append(" ".join(words) + rng.choice([".", ".", ".", "?", ";"]))
            count += n
        paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
        pages.append((number, "\n\n".join(paragraphs)))
    return pages


def _measure(name: str, corpus: str) -> dict:
    """Runs in a child process: extract, count (one core), plan, estimate."""
    sys.path.insert(0, str(REPO))
    from kimidocs.core import tokens
    from kimidocs.core.costs import estimate_plan_cost, lower_bound
    from kimidocs.core.models import get_model
    from kimidocs.core.planning import PageTokens, budget_for, plan_document
    from prompts import load_profile

    tokens.encoding()  # load the BPE file outside the timings
    profile = load_profile("summary")
    t0 = time.perf_counter()
    if name == GENERATED:
        pages = _generated_pages()
    else:
        import extractors

        doc = extractors.extract(os.path.join(corpus, name))
        pages = [(p.number, p.text) for p in doc.pages]
    extract_s = time.perf_counter() - t0
    text_bytes = sum(len(t.encode("utf-8")) for _, t in pages)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    counts = [tokens.count(t) for _, t in pages]  # one core, page by page, as the pipeline counts
    count_s = time.perf_counter() - t0
    count_cpu = time.process_time() - cpu0
    page_tokens = [PageTokens(n, t, c) for (n, t), c in zip(pages, counts, strict=True)]
    doc_tokens = sum(counts)

    plans = []
    for model_id in MODELS:
        model = get_model(model_id)
        t0 = time.perf_counter()
        plan = plan_document(page_tokens, budget_for(model, profile))
        plan_s = time.perf_counter() - t0
        est = estimate_plan_cost(plan, profile, model)
        input_usd = (
            est.miss_tokens * model.price_cache_miss + est.cached_tokens_expected * model.price_cache_hit
        ) / 1e6
        output_usd = est.output_tokens * model.price_output / 1e6
        plans.append(
            {
                "model": model_id,
                "strategy": plan.strategy,
                "chunks": len(plan.chunks),
                "levels": plan.reduce_levels,
                "calls": plan.calls,
                "plan_ms": plan_s * 1000,
                "est_usd": est.usd,
                "est_input_usd": input_usd,
                "est_output_usd": output_usd,
                "floor_input_usd": lower_bound(doc_tokens, 0, model),
                "prompt_tokens": est.prompt_tokens,
                "cached": est.cached_tokens_expected,
            }
        )
    return {
        "name": name,
        "pages": len(pages),
        "mb": text_bytes / 1e6,
        "tokens": doc_tokens,
        "extract_s": extract_s,
        "count_s": count_s,
        "mb_per_s": text_bytes / 1e6 / count_cpu if count_cpu else float("inf"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "plans": plans,
    }


def _run(name: str, corpus: str) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (name, corpus))


def markdown(results: list[dict], command: str) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} with `{command}` "
        "(one process per document, nothing sent to a model).",
        "",
        "| document | pages | text MB | o200k tokens | extract s | count s | count MB/s (1 core) "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {Path(r['name']).name} | {r['pages']:,} | {r['mb']:.2f} | {r['tokens']:,} "
            f"| {r['extract_s']:.1f} | {r['count_s']:.2f} | {r['mb_per_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Plans and estimated cost (USD; output counted at every call's max_tokens, an upper bound). "
        "Floor = every document token once at the miss price; ratio = our estimated input cost / floor.",
        "",
        "| document | model | strategy | chunks | reduce levels | calls | plan ms | est. input $ | floor $ "
        "| ratio | est. output $ | est. total $ |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for p in r["plans"]:
            ratio = p["est_input_usd"] / p["floor_input_usd"] if p["floor_input_usd"] else float("nan")
            lines.append(
                f"| {Path(r['name']).name} | {p['model']} | {p['strategy']} | {p['chunks']} | {p['levels']} "
                f"| {p['calls']} | {p['plan_ms']:.0f} | {p['est_input_usd']:.4f} "
                f"| {p['floor_input_usd']:.4f} | {ratio:.3f} | {p['est_output_usd']:.4f} "
                f"| {p['est_usd']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--only", nargs="*", help="document names to run (default: all)")
    args = parser.parse_args()
    names = [*DOCS, GENERATED]
    if args.only:
        names = [n for n in names if any(o in n for o in args.only)]
    results = []
    for name in names:
        res = _run(name, args.corpus)
        print(f"{name}: {res['tokens']:,} tokens, count {res['mb_per_s']:.1f} MB/s", file=sys.stderr)
        results.append(res)
    print(markdown(results, "python bench/plan.py"))


if __name__ == "__main__":
    main()
