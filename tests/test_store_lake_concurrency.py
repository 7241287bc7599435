"""Many writers on one DuckLake at once (separate processes, as separate machines would be).

Writers of the SAME keys must leave exactly one row per key: DuckLake 1.5.5 cannot see the conflict
of two delete+insert upserts of a new key (duckdb/ducklake#1393), so this holds only because the store
serialises writers per key (PostgreSQL advisory locks). Writers of different keys conflict per table
and are retried whole: every row arrives once. A read-only reader sees one snapshot per transaction.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import duckdb
from lake_fixture import Lake

from kimidocs.store import Store
from kimidocs.store.extensions import extension_path

WRITERS = 3
PAGES = 2

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from extractors.document import Document, Page
    from kimidocs.core.records import FileRecord
    from kimidocs.core.results import Summary
    from kimidocs.store import Store, SummaryRow

    db, data_path, prefix = sys.argv[1:4]
    count, rounds, pages_per_doc = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    lockstep = len(sys.argv) > 7  # wait for a "go" before each document: all writers hit it at once
    store = Store(db, data_path=data_path)
    store.migrate()
    print("ready", flush=True)
    sys.stdin.readline()  # everyone starts together
    for _ in range(rounds):
        for n in range(count):
            if lockstep and n:
                print("next", flush=True)
                sys.stdin.readline()
            doc_id = f"{prefix}doc{n:04d}"
            pages = tuple(Page(p, f"page {p} of {doc_id}") for p in range(1, pages_per_doc + 1))
            doc = Document(f"in/{doc_id}.pdf", doc_id, "pdf", 100, pages, "1")
            store.save_document(doc, FileRecord(doc.path, doc_id, 100, datetime.now(UTC)))
            s = Summary(summary="s", title=doc_id)
            row = SummaryRow(doc_id, "summary", "v1", "kimi-k2.5", "r1", "emulator", s, 1.0, 2, 2,
                             s.model_dump_json(), datetime.now(UTC))
            store.save_summary(row, document_status="summarized")
    print(f"done conflicts={store.lake.conflicts} commits={store.lake.commits}", flush=True)
    store.close()
    """
)


def _writers(lake: Lake, prefixes: list[str], count: int, *, lockstep: bool = False) -> list[str]:
    """Start one process per prefix, let them all go at once, return their last lines. The lake is
    new: the writers also create it together (its catalog tables, then the migrations). `lockstep`:
    every writer starts each document at the same moment (they wait for each other in between)."""
    tail = [str(count), "1", str(PAGES)] + (["lockstep"] if lockstep else [])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, lake.db, lake.data_path, prefix, *tail],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for prefix in prefixes
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for step in range(count if lockstep else 1):
            if step:
                for proc in procs:
                    assert proc.stdout is not None and proc.stdout.readline().strip() == "next"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        outs = [proc.communicate(timeout=240)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * len(procs), outs
        return [out.strip().splitlines()[-1] for out in outs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _key_counts(store: Store) -> dict[str, tuple[int, int]]:
    """table -> (rows, distinct natural keys)."""
    sql = {
        "documents": "SELECT count(*), count(DISTINCT doc_id) FROM documents",
        "pages": "SELECT count(*), count(DISTINCT (doc_id, page_no)) FROM pages",
        "files": "SELECT count(*), count(DISTINCT path) FROM files",
        "summaries": "SELECT count(*), count(DISTINCT (doc_id, profile, prompt_version, model)) "
        "FROM summaries",
    }
    return {name: tuple(store.query(q).rows[0]) for name, q in sql.items()}  # type: ignore[misc]


def test_writers_of_the_same_new_keys_leave_exactly_one_row_per_key(lake: Lake) -> None:
    docs = 10
    _writers(lake, [""] * WRITERS, docs, lockstep=True)
    store = Store(lake.db, read_only=True)
    assert _key_counts(store) == {
        "documents": (docs, docs),
        "pages": (docs * PAGES, docs * PAGES),
        "files": (docs, docs),
        "summaries": (docs, docs),
    }
    assert store.query("SELECT DISTINCT status FROM documents").rows == (("summarized",),)
    store.close()


def test_writers_of_different_keys_all_arrive_once_through_conflicts(lake: Lake) -> None:
    docs = 8
    lines = _writers(lake, [f"w{i}-" for i in range(WRITERS)], docs)
    store = Store(lake.db, read_only=True)
    total = docs * WRITERS
    assert _key_counts(store) == {
        "documents": (total, total),
        "pages": (total * PAGES, total * PAGES),
        "files": (total, total),
        "summaries": (total, total),
    }
    assert all(line.startswith("done") for line in lines), lines
    store.close()


def _analyst(lake: Lake) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in ("ducklake", "postgres_scanner"):
        con.execute(f"LOAD '{extension_path(name).as_posix()}'")
    con.execute(f"ATTACH '{lake.db}' AS lake (READ_ONLY)")
    return con


def test_a_read_only_reader_sees_one_consistent_snapshot_while_a_writer_commits(lake: Lake) -> None:
    Store(lake.db, data_path=lake.data_path).migrate()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, lake.db, lake.data_path, "r-", "12", "1", str(PAGES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    con = _analyst(lake)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        count = "SELECT (SELECT count(*) FROM lake.documents), (SELECT count(*) FROM lake.pages)"
        con.execute("BEGIN TRANSACTION")  # the reader's snapshot is taken before the writer starts
        first = con.execute(count).fetchone()
        assert first == (0, 0)
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        deadline = time.monotonic() + 120
        seen = Store(lake.db, read_only=True)  # the writer's progress, seen through another connection
        while seen.query("SELECT count(*) FROM documents").rows[0][0] < 3:
            assert time.monotonic() < deadline and writer.poll() is None, "the writer made no progress"
        seen.close()
        assert con.execute(count).fetchone() == first  # the same snapshot inside one transaction
        con.execute("COMMIT")
        docs, pages = con.execute(count).fetchone() or (0, 0)
        assert docs >= 3 and pages == docs * PAGES  # a document always comes with its pages
        writer.communicate(timeout=240)
        assert writer.returncode == 0
    finally:
        con.close()
        writer.kill()
        writer.wait()
