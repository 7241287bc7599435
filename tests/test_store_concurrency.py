"""Analysts query while a pipeline writes (two real processes), and a held file gives a clear error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kimidocs.store import DatabaseLocked, Store

# Longest any single read may wait for the writer: well above the writer's lease (IDLE_S / the
# wait-marker check, tens of ms), well below the 15 s `kimidocs query` waits by default.
WRITER_SECONDS = 10.0

WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from extractors.document import Document, Page
    from kimidocs.core.records import CallRecord, FileRecord, Usage
    from kimidocs.store import Store

    store = Store(sys.argv[1], lock_timeout_s=60)
    store.migrate()
    print("ready", flush=True)
    end = time.monotonic() + float(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    n = 0
    while time.monotonic() < end:
        doc_id = f"{prefix}doc{n:06d}"
        doc = Document(f"in/{n}.pdf", doc_id, "pdf", 100, (Page(1, f"page one of {n}"), Page(2, "two")), "1")
        store.save_document(doc, FileRecord(doc.path, doc_id, 100, datetime.now(UTC)))
        store.save_call(CallRecord(f"{prefix}c{n}", "r1", doc_id, "single", f"k{n}", "kimi-k2.5", "emulator",
                                   usage=Usage(100, 50, 10), started_at=datetime.now(UTC)))
        n += 1
    store.close()
    print(n, flush=True)
    """
)


def test_queries_run_while_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(WRITER_SECONDS)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    reader = Store(db, read_only=True, lock_timeout_s=30)  # what `kimidocs query` opens
    seen: list[int] = []
    while writer.poll() is None:
        rows = reader.query("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM calls)").rows
        docs, calls = rows[0]
        assert calls in (docs, docs - 1)  # a document and its call are two transactions, never torn
        seen.append(docs)
        time.sleep(0.1)
    written = int(writer.stdout.read().strip())
    assert writer.returncode == 0
    assert seen == sorted(seen) and seen[-1] > 0
    # The reader got in while the writer was writing, not only before or after it (how long each query
    # waited is a benchmark's business: bench/store.py).
    assert len({n for n in seen if 0 < n < written}) >= 3, seen
    final = reader.query("SELECT count(*), count(DISTINCT doc_id) FROM documents").rows
    assert final == ((written, written),)  # nothing lost
    assert reader.query("SELECT count(*) FROM pages").rows == ((2 * written,),)
    assert not list(tmp_path.glob("k.duckdb.wait-*"))  # every wait marker cleaned up


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(30)
    """
)


def test_a_file_held_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Store(db).migrate()
    Store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(DatabaseLocked, match="another process holds this DuckDB file") as err:
            Store(db, read_only=True, lock_timeout_s=0.5).query("SELECT 1")
        assert str(db) in str(err.value) and err.value.waited_s >= 0.5
        with pytest.raises(DatabaseLocked):
            Store(db, lock_timeout_s=0.5).has_summary("d", "p", "v", "m")
    finally:
        holder.kill()
        holder.wait()
    assert Store(db, read_only=True, lock_timeout_s=5).query("SELECT count(*) FROM documents").rows == ((0,),)


def test_two_writing_processes_take_turns(tmp_path: Path) -> None:
    """Two runs on one database (say the nightly and an ad-hoc run): both finish, every row kept."""
    db = tmp_path / "k.duckdb"
    Store(db).migrate()
    Store(db).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), "4", f"w{i}-"], stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    written = []
    for w in writers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        written.append(int(out.split()[-1]))
    assert all(n > 0 for n in written)
    reader = Store(db, read_only=True)
    assert reader.query("SELECT count(*) FROM documents").rows == ((sum(written),),)
    assert reader.query("SELECT count(*) FROM calls").rows == ((sum(written),),)
