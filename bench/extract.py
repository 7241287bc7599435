"""Extraction speed and quality: our `extractors` (each PDF engine) against bare pypdf, bare
pypdfium2 and python-docx on the same files.

    .venv/bin/python bench/extract.py [--corpus ../shared/corpus] [--rounds 1]

Each (library, round) runs in a fresh subprocess, ours and bare interleaved round by round,
so neither inherits the other's caches or warm imports; the best round counts. Timed sets as
in shared/corpus/BASELINES.md: the .pdf files under pdf/ and bad/, the .docx files under
docx/ and bad/. Pages/s = pages extracted / summed per-file seconds (a file that fails
contributes its time and no pages). PDF libraries:
    pypdf          bare `PdfReader(p).pages[i].extract_text()` (the reference)
    pypdfium2      bare `PdfDocument(p)[i].get_textpage().get_text_range()`
    ours-pypdf     `extractors.extract` with Limits(pdf_engine="pypdf")
    ours-pdfium    ... pdf_engine="pdfium"
    ours-pdf       ... the default, "auto" (pdfium; pypdf where pdfium reads worse)
Quality: each file with a ground truth is scored as tests/test_extract_manifest.py scores it
(difflib word ratio of the normalised text; multicolumn.pdf: word F1 of page 1).
Then `extract_many` with 2 workers over the PDFs (default engine; wall clock, worker start-up
included), and the per-file cost of `Limits(timeout_s=...)` isolation. Prints Markdown for
BENCHMARKS.md. One round takes about 3 minutes on 2 cores (the two pypdf passes over the two long
books are most of it).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import glob
import json
import logging
import os
import re
import subprocess
import sys
import time
import unicodedata
import warnings
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files(corpus: str, ext: str) -> list[str]:
    sub = "pdf" if ext == "pdf" else "docx"
    return sorted(
        glob.glob(os.path.join(corpus, sub, f"*.{ext}")) + glob.glob(os.path.join(corpus, "bad", f"*.{ext}"))
    )


PDF_LIBS = ("ours-pdf", "ours-pdfium", "ours-pypdf", "pypdfium2", "pypdf")
ENGINES = {"ours-pdf": "auto", "ours-pdfium": "pdfium", "ours-pypdf": "pypdf"}


def worker(lib: str, corpus: str) -> None:
    """One timed pass of `lib` over its file set; prints JSON {files: [...]} with, per file, the
    seconds, pages, chars, error type, the engine that read it (ours) and the ground-truth score."""
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    if lib in ENGINES or lib == "ours-docx":
        import extractors

        limits = extractors.Limits(pdf_engine=ENGINES.get(lib, "auto"))

        def run(path: str) -> tuple[list[str], str]:
            doc = extractors.extract(path, limits=limits)
            return [p.text for p in doc.pages], doc.extractor_version.partition("+")[2]

    elif lib == "pypdf":
        from pypdf import PdfReader

        def run(path: str) -> tuple[list[str], str]:
            reader = PdfReader(path)
            return [reader.pages[i].extract_text() for i in range(len(reader.pages))], ""

    elif lib == "pypdfium2":
        import pypdfium2

        def run(path: str) -> tuple[list[str], str]:
            doc = pypdfium2.PdfDocument(path)
            try:
                return [doc[i].get_textpage().get_text_range() for i in range(len(doc))], ""
            finally:
                doc.close()

    elif lib == "python-docx":
        import docx

        def run(path: str) -> tuple[list[str], str]:
            return ["\n".join(p.text for p in docx.Document(path).paragraphs)], ""

    else:
        raise SystemExit(f"unknown lib {lib}")
    truths = ground_truths(corpus)
    rows = []
    for path in files(corpus, "pdf" if lib in PDF_LIBS else "docx"):
        rel = os.path.relpath(path, corpus)
        t = time.perf_counter()
        try:
            (pages, engine), error = run(path), ""
        except Exception as exc:  # counted, never aborts the pass
            (pages, engine), error = ([], ""), type(exc).__name__
        seconds = time.perf_counter() - t
        score = similarity(truths[rel], pages) if rel in truths and pages else None
        rows.append(
            {
                "file": rel,
                "s": seconds,
                "pages": len(pages) if lib != "python-docx" else int(not error),
                "chars": sum(len(p) for p in pages),
                "error": error,
                "engine": engine,
                "score": score,
            }
        )
    print(json.dumps({"lib": lib, "files": rows}))


# --- ground truth, scored as tests/test_extract_manifest.py scores it ---------------------------


def ground_truths(corpus: str) -> dict[str, tuple[str, str]]:
    """extracted file -> (normalised reference text, how to score: "ratio" | "f1-page1")."""
    out = {}
    with open(os.path.join(corpus, "MANIFEST.tsv"), encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["kind"] != "groundtruth":
                continue
            target = row["expectation"].removeprefix("reference text for ")
            with open(os.path.join(corpus, row["file"]), encoding="utf-8") as ref:
                text = normalise(ref.read(), row["file"].endswith(".md"))
            out[target] = (text, "f1-page1" if target == "pdf/multicolumn.pdf" else "ratio")
    return out


def normalise(text: str, markdown: bool = False) -> str:
    if markdown:
        text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
        text = re.sub(r"^\s*\|?[\s:|-]*-{3,}[\s:|-]*$", " ", text, flags=re.M)
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\W_]+", " ", text)
    return " ".join(text.lower().split())


def similarity(truth: tuple[str, str], pages: list[str]) -> float:
    reference, how = truth
    if how == "f1-page1":
        ref, got = Counter(reference.split()), Counter(normalise(pages[0]).split())
        common = sum((ref & got).values())
        if not common:
            return 0.0
        precision, recall = common / sum(got.values()), common / sum(ref.values())
        return 100 * 2 * precision * recall / (precision + recall)
    text = normalise("\n\n".join(pages))
    return 100 * difflib.SequenceMatcher(None, reference.split(), text.split(), autojunk=False).ratio()


def one_pass(lib: str, corpus: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", lib, "--corpus", corpus],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


LONG_PDFS = ("pdf/The-Art-of-Public-Speaking.pdf", "pdf/public-speaking-x2.pdf")


def quality_table(bests: dict[str, dict]) -> None:
    """Per PDF: pages and chars, or the error, of each library; the ground-truth score where there is
    one; for ours-pdf (auto), the engine whose text was kept."""
    print("| PDF | " + " | ".join(PDF_LIBS) + " |")
    print("|---|" + "---|" * len(PDF_LIBS))
    rows = {lib: {r["file"]: r for r in bests[lib]["files"]} for lib in PDF_LIBS}
    for rel in rows[PDF_LIBS[0]]:
        cells = []
        for lib in PDF_LIBS:
            r = rows[lib][rel]
            if r["error"]:
                cells.append(f"**{r['error']}**")
                continue
            cell = f"{r['pages']} p, {r['chars']:,} ch"
            if r["score"] is not None:
                cell += f", **{r['score']:.1f}**"
            if lib == "ours-pdf":
                cell += f" ({r['engine'] or 'read as DOCX'})"
            cells.append(cell)
        print(f"| {rel} | " + " | ".join(cells) + " |")
    print()


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
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--worker")
    args = ap.parse_args()
    corpus = os.path.abspath(args.corpus)
    if args.worker:
        worker(args.worker, corpus)
        return
    passes: dict[str, list[dict]] = {k: [] for k in (*PDF_LIBS, "ours-docx", "python-docx")}
    for r in range(args.rounds):
        for lib in passes:
            passes[lib].append(one_pass(lib, corpus))
            print(
                f"round {r + 1} {lib}: {sum(x['s'] for x in passes[lib][-1]['files']):.2f} s", file=sys.stderr
            )
    print(
        f"| library | files | pages (docs) extracted | total s (best of {args.rounds}) | per-round s "
        "| s on the 2 long PDFs | rate | failures |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rates = {}
    bests = {}
    for lib, ps in passes.items():
        b, total, totals = best(ps)
        bests[lib] = b
        pages = sum(r["pages"] for r in b["files"])
        fails = [f"{os.path.basename(r['file'])} ({r['error']})" for r in b["files"] if r["error"]]
        long_s = sum(r["s"] for r in b["files"] if r["file"] in LONG_PDFS)
        rates[lib] = pages / total
        unit = "docs/s" if "docx" in lib else "pages/s"
        print(
            f"| {lib} | {len(b['files'])} | {pages} | {total:.2f} | {' / '.join(f'{t:.2f}' for t in totals)} "
            f"| {long_s:.2f} | {rates[lib]:.1f} {unit} | {len(fails)}: {', '.join(fails)} |"
        )
    print()
    print(
        f"pages/s: pypdfium2 / pypdf {rates['pypdfium2'] / rates['pypdf']:.1f}x; "
        f"ours-pdfium / ours-pypdf {rates['ours-pdfium'] / rates['ours-pypdf']:.1f}x; "
        f"ours-pdf (auto) / pypdf {rates['ours-pdf'] / rates['pypdf']:.1f}x; "
        f"ours-pdfium / pypdfium2 {rates['ours-pdfium'] / rates['pypdfium2']:.1%}; "
        f"ours-pypdf / pypdf {rates['ours-pypdf'] / rates['pypdf']:.1%}; "
        f"ours-docx / python-docx docs/s {rates['ours-docx'] / rates['python-docx']:.1%}"
    )
    print()
    quality_table(bests)
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
