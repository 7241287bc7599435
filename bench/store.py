"""Store benchmark: write rates, file size per 1,000 pages, example-query latency at 10,000 documents.

    .venv/bin/python bench/store.py [--docs 10000] [--pages 5] [--out DIR]

Prints a markdown table (the Store section of BENCHMARKS.md). Everything goes through the Store
API the pipeline uses, except the "row-by-row vs batched" rows, which compare two ways of
inserting the same page rows inside one transaction (executemany vs list parameters + UNNEST vs one JSON
text, which is what the store does since 2026-12-06).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from extractors.document import Document, Page
from kimidocs.core.records import CallRecord, FileRecord, RunRecord, RunTotals, Usage
from kimidocs.core.results import Summary
from kimidocs.store import Store, SummaryRow
from kimidocs.store.columns import insert_rows_json
from kimidocs.store.connection import held

REPO = Path(__file__).resolve().parent.parent
WORDS = re.findall(
    r"\w+",
    "agreement party payment invoice contract term notice shall pursuant section clause annual report "
    "revenue board meeting delivery service provider customer liability warranty schedule amount total "
    "period date the of and to in for on with by as at from that this which be is are was were will may not",
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def page_text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def make_doc(i: int, pages: int, rng: random.Random, chars: int = 1_800) -> Document:
    doc_id = hashlib.sha256(f"doc-{i}".encode()).hexdigest()
    return Document(
        path=f"data/inbox/{i // 1000:02d}/doc-{i:06d}.pdf",
        sha256=doc_id,
        kind="pdf",
        size=50_000 + i,
        pages=tuple(Page(n, page_text(rng, chars)) for n in range(1, pages + 1)),
        extractor_version="bench",
    )


def make_summary(doc: Document, i: int) -> SummaryRow:
    data = {
        "title": f"Agreement {i}",
        "document_type": "contract",
        "language": "en",
        "summary": doc.pages[0].text[:300],
        "key_points": [
            {"point": p.text[:80], "pages": [p.number], "evidence": p.text[:30]} for p in doc.pages[:3]
        ],
        "entities": [{"name": f"Party {i % 97}", "type": "organization"}],
        "dates": [
            {"date": ["2024-01-05", "March 2023", "5 Jan 2022"][i % 3], "what": "signed", "pages": [1]}
        ],
        "amounts": [{"value": f"${(i % 500) * 1000:,}.50", "what": "fee", "pages": [len(doc.pages)]}],
    }
    s = Summary.model_validate(data)
    return SummaryRow(
        doc.sha256,
        "summary",
        "v1",
        "kimi-k2.5",
        "bench",
        "emulator",
        s,
        1.0,
        len(doc.pages),
        len(doc.pages),
        s.model_dump_json(),
        T0 + timedelta(seconds=i),
    )


def make_call(doc: Document, i: int, k: int) -> CallRecord:
    usage = Usage(3_000, 1_024 * k, 400)
    return CallRecord(
        f"call-{i}-{k}",
        "bench",
        doc.sha256,
        "single" if k == 0 else "repair",
        hashlib.sha256(f"{i}:{k}".encode()).hexdigest(),
        "kimi-k2.5",
        "emulator",
        usage=usage,
        cost_usd=0.0015,
        latency_ms=900.0,
        started_at=T0 + timedelta(seconds=i),
    )


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def bench_writes(tmp: Path, rng: random.Random, rows: list[tuple[str, str, str]]) -> None:
    store = Store(tmp / "writes.duckdb")
    store.migrate()
    docs = [make_doc(100_000 + i, 5, rng) for i in range(300)]
    t = time.perf_counter()
    for d in docs:
        store.save_document(d, FileRecord(d.path, d.sha256, d.size, T0), page_tokens=[400] * 5)
    dt = time.perf_counter() - t
    rows.append(
        (
            "save_document (1 doc + 5 pages + file per transaction)",
            rate(len(docs), dt) + " docs",
            rate(len(docs) * 5, dt) + " pages",
        )
    )
    calls = [make_call(d, 100_000 + i, k) for i, d in enumerate(docs) for k in range(2)]
    t = time.perf_counter()
    for c in calls[:300]:
        store.save_call(c)
    dt = time.perf_counter() - t
    rows.append(("save_call (one call per transaction, as the pipeline logs)", rate(300, dt), ""))
    t = time.perf_counter()
    for start in range(300, len(calls), 100):
        store.save_calls(calls[start : start + 100])
    dt = time.perf_counter() - t
    rows.append(("save_calls (100 calls per transaction)", rate(len(calls) - 300, dt), ""))
    summaries = [make_summary(d, i) for i, d in enumerate(docs)]
    t = time.perf_counter()
    for s in summaries:
        store.save_summary(s)
    dt = time.perf_counter() - t
    rows.append(("save_summary (coercion + replace on natural key)", rate(len(summaries), dt), ""))
    # same page rows, one transaction: row-by-row executemany vs list parameters + UNNEST
    page_rows = [
        (f"x{i}", n, f"x{i}:{n}", None, page_text(rng, 1_800), 1_800, 400, 0)
        for i in range(400)
        for n in range(1, 6)
    ]
    with held(store.path, timeout_s=30) as con:
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", page_rows)
        con.execute("ROLLBACK")
        row_by_row = time.perf_counter() - t
        cols = list(zip(*page_rows, strict=True))
        t = time.perf_counter()
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO pages SELECT unnest($1), unnest($2), unnest($3), unnest($4), unnest($5), "
            "unnest($6), unnest($7), unnest($8)",
            [list(c) for c in cols],
        )
        con.execute("ROLLBACK")
        batched = time.perf_counter() - t
        names = ("doc_id", "page_no", "page_id", "label", "text", "chars", "tokens_est", "image_count")
        t = time.perf_counter()
        con.execute("BEGIN")
        insert_rows_json(con, "pages", [dict(zip(names, row, strict=True)) for row in page_rows])
        con.execute("ROLLBACK")
        as_json = time.perf_counter() - t
    rows.append(("pages, row-by-row (executemany, one transaction)", rate(len(page_rows), row_by_row), ""))
    rows.append(
        ("pages, batched (list parameters + UNNEST, one transaction)", rate(len(page_rows), batched), "")
    )
    rows.append(
        ("pages, one JSON text (what the store does, one transaction)", rate(len(page_rows), as_json), "")
    )
    store.close()


def bench_big(
    tmp: Path, rng: random.Random, n_docs: int, pages: int, rows: list[tuple[str, str, str]]
) -> Path:
    db = tmp / "big.duckdb"
    store = Store(db, search_cache=tmp / "search")
    store.migrate()
    store.start_run(RunRecord("bench", T0, "data/inbox", "summary", "kimi-k2.5", "emulator"))
    t = time.perf_counter()
    for i in range(n_docs):
        d = make_doc(i, pages, rng)
        store.save_document(d, FileRecord(d.path, d.sha256, d.size, T0), page_tokens=[400] * pages)
        store.save_calls([make_call(d, i, 0), make_call(d, i, 1)])
        store.save_summary(make_summary(d, i))
    fill_s = time.perf_counter() - t
    store.finish_run("bench", RunTotals("completed", documents_ok=n_docs))
    size = _size(store)
    t = time.perf_counter()
    store.refresh_search_index()
    fts_s = time.perf_counter() - t
    index_size = store.search_index().file.stat().st_size
    t = time.perf_counter()
    hits = store.search("invoice warranty")
    search_s = time.perf_counter() - t
    n_pages = n_docs * pages
    rows.append(
        (
            f"fill {n_docs:,} documents ({n_pages:,} pages, 2 calls + 1 summary each), Store API",
            f"{fill_s:.1f} s",
            rate(n_docs, fill_s) + " docs",
        )
    )
    rows.append(
        ("first search: local index of every page built", f"{fts_s:.1f} s", rate(n_pages, fts_s) + " pages")
    )
    rows.append(
        ("search with nothing new to index (Store.search)", f"{search_s * 1000:.0f} ms", f"{len(hits)} rows")
    )
    per_k = 1000 / n_pages / 1e6
    rows.append(
        (
            "file size per 1,000 pages (~1,800 chars each): store / local search index",
            f"{size[0] * per_k:.2f} MB",
            f"{index_size * per_k:.2f} MB",
        )
    )
    rows.append(
        (
            "... of the store, used blocks (the rest is free space DuckDB reuses)",
            f"{size[1] * per_k:.2f} MB",
            "",
        )
    )
    return db


def _size(store: Store) -> tuple[int, int]:
    """(file bytes, bytes in used blocks) after a checkpoint: the file also holds free blocks."""
    with held(store.path, timeout_s=30) as con:
        con.execute("CHECKPOINT")
        row = con.execute("SELECT used_blocks * block_size FROM pragma_database_size()").fetchone()
    store.close()
    return store.path.stat().st_size, int(row[0]) if row else 0


def bench_queries(db: Path, rows: list[tuple[str, str, str]]) -> None:
    text = (REPO / "docs" / "SCHEMA.md").read_text(encoding="utf-8")
    store = Store(db, read_only=True)
    parts = text.split("```sql\n")
    for before, block in itertools.pairwise(parts):
        intro = before.rstrip().split("\n\n")[-1].splitlines()[0]
        sql = block.split("```")[0].replace("'%/corpus/%'", "'data/inbox/%'")
        sql = sql.replace("crazy ones troublemakers", "invoice warranty")
        times = []
        for _ in range(5):
            t = time.perf_counter()
            result = store.query(sql)
            times.append(time.perf_counter() - t)
        label = intro.strip().rstrip(":.")[:80]
        rows.append(
            (f"query: {label}", f"{statistics.median(times) * 1000:.0f} ms", f"{len(result.rows):,} rows")
        )


WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from kimidocs.core.records import CallRecord, Usage
    from kimidocs.store import Store
    s = Store(sys.argv[1], lock_timeout_s=60); s.migrate(); print("ready", flush=True)
    end, n = time.monotonic() + 10, 0
    while time.monotonic() < end:
        s.save_call(CallRecord(f"w{n}", "r", "d", "single", f"k{n}", "kimi-k2.5", "emulator",
                               usage=Usage(10, 5, 1), started_at=datetime.now(UTC)))
        n += 1
    s.close(); print(n, flush=True)
    """
)


def bench_concurrency(tmp: Path, rows: list[tuple[str, str, str]]) -> None:
    db = tmp / "conc.duckdb"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    writer.stdout.readline()
    reader = Store(db, read_only=True)
    waits = []
    while writer.poll() is None:
        t = time.perf_counter()
        reader.query("SELECT count(*) FROM calls")
        waits.append(time.perf_counter() - t)
        time.sleep(0.1)
    written = int(writer.stdout.read())
    waits.sort()
    rows.append(
        (
            "writer process logging calls back to back for 10 s, while queried every 100 ms",
            f"{written / 10:,.0f} calls/s",
            f"{len(waits)} queries",
        )
    )
    rows.append(
        (
            "query wait during those writes: median / p95 / max",
            f"{waits[len(waits) // 2] * 1000:.0f} / {waits[int(len(waits) * 0.95)] * 1000:.0f} ms",
            f"max {waits[-1] * 1000:.0f} ms",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="keep the databases here")
    args = parser.parse_args()
    tmp = args.out or Path(tempfile.mkdtemp(prefix="kimidocs-bench-store-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    rows: list[tuple[str, str, str]] = []
    try:
        bench_writes(tmp, rng, rows)
        db = bench_big(tmp, rng, args.docs, args.pages, rows)
        bench_queries(db, rows)
        bench_concurrency(tmp, rows)
    finally:
        if args.out is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print("| what | result | |")
    print("|---|---|---|")
    for what, a, b in rows:
        print(f"| {what} | {a} | {b} |")


if __name__ == "__main__":
    main()
