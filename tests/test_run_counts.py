"""Defect: the run's counts misled (issue 22.6). A document whose summary read none of its pages counted
as ok, and a file refused at discovery (a FIFO) had a `failures` row but was not in `documents_failed`.
Now every file with a failure recorded in the run counts as failed, and ok + skipped + failed = files."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import db_rows, run_pipeline


def test_a_summary_that_read_no_page_is_a_failure(tmp_path: Path, make_emulator) -> None:
    """One page, cut at max_tokens, read in two parts; the second part fails twice (and its repair): the
    summary of the first part alone leaves the page unread (coverage 0)."""
    emu = make_emulator()
    folder = tmp_path / "in"
    folder.mkdir()
    first = "\n\n".join(f"Paragraph {n}: the tenant pays 1,200 EUR on day {n}." for n in range(40))
    second = "\n\n".join(f"Paragraph {n}: ZEBRAMARK the landlord repairs the roof." for n in range(40, 80))
    (folder / "lease.txt").write_text(first + "\n\n" + second + "\n")
    emu.fail_next("length")
    emu.fail_next("invalid_json", count=2, match="ZEBRAMARK")
    db = tmp_path / "k.duckdb"
    report = run_pipeline(folder, db, emu, concurrency=1)
    (outcome,) = report.outcomes
    assert db_rows(db, "SELECT coverage FROM summaries") == [(0.0,)]
    assert outcome.status == "failed" and outcome.error_type == "NoPageRead", outcome
    assert db_rows(db, "SELECT documents_ok, documents_failed FROM runs") == [(0, 1)]
    assert db_rows(db, "SELECT status FROM documents") == [("failed",)]


def test_every_file_with_a_failure_counts_as_failed(tmp_path: Path, kimi_emulator) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.pdf")
    (folder / "note.txt").write_text("A short note about the quarterly budget.\n" * 20)
    (folder / "empty.txt").write_text("")
    db = tmp_path / "k.duckdb"
    report = run_pipeline(folder, db, kimi_emulator)
    ok, skipped, failed = db_rows(db, "SELECT documents_ok, documents_skipped, documents_failed FROM runs")[0]
    with_failures = db_rows(db, "SELECT count(DISTINCT path) FROM failures")[0][0]
    assert with_failures == 2 and failed == with_failures, (ok, skipped, failed)
    assert ok + skipped + failed == len(report.outcomes) == 3
