"""Extraction speed: our `extractors` against bare pypdf / python-docx on the same files.

    .venv/bin/python bench/extract.py [--corpus ../shared/corpus] [--rounds 2]

Each (library, round) runs in a fresh subprocess, ours and bare interleaved round by round,
so neither inherits the other's caches or warm imports; the best round counts. Timed sets as
in shared/corpus/BASELINES.md: the .pdf files under pdf/ and bad/, the .docx files under
docx/ and bad/. Pages/s = pages extracted / summed per-file seconds (a file that fails
contributes its time and no pages). Then `extract_many` with 2 workers over the PDFs (wall
clock, worker start-up included), and the per-file cost of `Limits(timeout_s=...)` isolation.
Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import subprocess
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files(corpus: str, ext: str) -> list[str]:
    sub = "pdf" if ext == "pdf" else "docx"
    return sorted(
        glob.glob(os.path.join(corpus, sub, f"*.{ext}")) + glob.glob(os.path.join(corpus, "bad", f"*.{ext}"))
    )


def worker(lib: str, corpus: str) -> None:
    """One timed pass of `lib` over its file set; prints JSON {files: [...]}."""
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    if lib in ("ours-pdf", "ours-docx"):
        import extractors

        def run(path: str) -> int:
            return len(extractors.extract(path).pages)

    elif lib == "pypdf":
        from pypdf import PdfReader

        def run(path: str) -> int:
            reader = PdfReader(path)
            for i in range(len(reader.pages)):
                reader.pages[i].extract_text()
            return len(reader.pages)

    elif lib == "python-docx":
        import docx

        def run(path: str) -> int:
            "\n".join(p.text for p in docx.Document(path).paragraphs)
            return 1

    else:
        raise SystemExit(f"unknown lib {lib}")
    rows = []
    for path in files(corpus, "pdf" if lib in ("ours-pdf", "pypdf") else "docx"):
        t = time.perf_counter()
        try:
            pages, error = run(path), ""
        except Exception as exc:  # counted, never aborts the pass
            pages, error = 0, type(exc).__name__
        rows.append(
            {
                "file": os.path.relpath(path, corpus),
                "s": time.perf_counter() - t,
                "pages": pages,
                "error": error,
            }
        )
    print(json.dumps({"lib": lib, "files": rows}))


def one_pass(lib: str, corpus: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", lib, "--corpus", corpus],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(passes: list[dict]) -> tuple[dict, float, list[float]]:
    totals = [sum(r["s"] for r in p["files"]) for p in passes]
    return passes[totals.index(min(totals))], min(totals), totals


def many(corpus: str) -> tuple[float, int, int]:
    import extractors

    paths = files(corpus, "pdf")
    t = time.perf_counter()
    pages = failures = 0
    for _, result in extractors.extract_many(paths, workers=2):
        if isinstance(result, extractors.ExtractionError):
            failures += 1
        else:
            pages += len(result.pages)
    return time.perf_counter() - t, pages, failures


def isolation_overhead(corpus: str, n: int = 30) -> tuple[float, float]:
    """ms per small file in-process vs through a (warm) worker process."""
    import extractors

    path = os.path.join(corpus, "pdf", "crazyones.pdf")
    extractors.extract(path, limits=extractors.Limits(timeout_s=60))  # start the worker
    timings = {}
    for label, limits in (("here", extractors.Limits()), ("isolated", extractors.Limits(timeout_s=60))):
        t = time.perf_counter()
        for _ in range(n):
            extractors.extract(path, limits=limits)
        timings[label] = (time.perf_counter() - t) / n * 1000
    return timings["here"], timings["isolated"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker")
    args = ap.parse_args()
    corpus = os.path.abspath(args.corpus)
    if args.worker:
        worker(args.worker, corpus)
        return
    passes: dict[str, list[dict]] = {k: [] for k in ("ours-pdf", "pypdf", "ours-docx", "python-docx")}
    for r in range(args.rounds):
        for lib in passes:
            passes[lib].append(one_pass(lib, corpus))
            print(
                f"round {r + 1} {lib}: {sum(x['s'] for x in passes[lib][-1]['files']):.2f} s", file=sys.stderr
            )
    print(
        f"| library | files | pages (docs) extracted | total s (best of {args.rounds}) | per-round s | rate "
        "| failures |"
    )
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for lib, ps in passes.items():
        b, total, totals = best(ps)
        pages = sum(r["pages"] for r in b["files"])
        fails = [f"{os.path.basename(r['file'])} ({r['error']})" for r in b["files"] if r["error"]]
        rates[lib] = pages / total
        unit = "docs/s" if "docx" in lib else "pages/s"
        print(
            f"| {lib} | {len(b['files'])} | {pages} | {total:.2f} | {' / '.join(f'{t:.2f}' for t in totals)} "
            "| "
            f"{rates[lib]:.1f} {unit} | {len(fails)}: {', '.join(fails)} |"
        )
    print()
    print(
        f"ours / pypdf pages/s: {rates['ours-pdf'] / rates['pypdf']:.1%}; "
        f"ours / python-docx docs/s: {rates['ours-docx'] / rates['python-docx']:.1%}"
    )
    wall, pages, failures = many(corpus)
    print(
        f"extract_many(workers=2) over the PDFs: {pages} pages in {wall:.2f} s wall = "
        f"{pages / wall:.1f} pages/s "
        f"({failures} files failed as expected), worker start-up included"
    )
    here, isolated = isolation_overhead(corpus)
    print(
        f"isolation cost on crazyones.pdf (1 page): {here:.1f} ms in-process, "
        f"{isolated:.1f} ms via a warm worker"
    )


if __name__ == "__main__":
    main()
