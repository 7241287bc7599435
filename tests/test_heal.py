"""Reruns heal: an answer that could not be used is not a result to reuse, and a partial document is
read again on the next run, paying only for what is missing. The emulator's request log is the bill."""

from __future__ import annotations

from pathlib import Path

import duckdb
from conftest import db_rows, run_pipeline

WORDS = ("pump", "valve", "crew", "pressure", "gauge", "filter", "motor", "seal", "flow", "tank")


def _memo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memo.txt").write_text(
        "Maintenance memo\n\nThe north pump was serviced on 2024-03-05 at a cost of $1,200.", "utf-8"
    )
    return folder


def _long(folder: Path, pages: int = 30) -> Path:
    """~30 pages of distinct paragraphs: several map chunks with the 8k test model."""
    folder.mkdir(parents=True, exist_ok=True)
    paragraphs = []
    for p in range(pages * 4):
        words = " ".join(WORDS[(p * 3 + i * i) % len(WORDS)] for i in range(110))
        paragraphs.append(f"Section marker{p:03d}. {words.capitalize()}.")
    (folder / "long.txt").write_text("Plant handbook\n\n" + "\n\n".join(paragraphs), "utf-8")
    return folder


def _status(db: Path) -> list[tuple]:
    return db_rows(db, "SELECT status FROM documents")


def test_invalid_json_answers_are_not_reused_once_the_fault_is_gone(tmp_path: Path, make_emulator) -> None:
    emulator = make_emulator(invalid_json_rate=1.0)
    folder, db = _memo(tmp_path / "in"), tmp_path / "k.duckdb"
    first = run_pipeline(folder, db, emulator, concurrency=1)
    assert first.count("failed") == 1 and emulator.chat_requests() == 2  # the call and its repair
    assert {s for (s,) in db_rows(db, "SELECT status FROM calls")} == {"unusable"}
    emulator.configure(invalid_json_rate=0.0)
    second = run_pipeline(folder, db, emulator, concurrency=1)
    assert second.count("ok") == 1 and emulator.chat_requests() == 3  # paid once more, and healed
    assert _status(db) == [("ok",)]
    # every call is still in the bill
    assert db_rows(db, "SELECT count(*), count(*) FILTER (WHERE cost_usd > 0) FROM calls") == [(3, 3)]


def test_answers_cut_at_max_tokens_are_not_reused(tmp_path: Path, make_emulator) -> None:
    emulator = make_emulator(length_rate=1.0)
    folder, db = _memo(tmp_path / "in"), tmp_path / "k.duckdb"
    first = run_pipeline(folder, db, emulator, concurrency=1)
    assert first.count("ok") == 0
    sent = emulator.chat_requests()
    assert sent >= 1 and {s for (s,) in db_rows(db, "SELECT status FROM calls")} == {"unusable"}
    emulator.configure(length_rate=0.0)
    second = run_pipeline(folder, db, emulator, concurrency=1)
    assert second.count("ok") == 1 and emulator.chat_requests() == sent + 1


def test_a_partial_document_is_retried_paying_only_for_the_missing_chunk(
    tmp_path: Path, make_emulator
) -> None:
    emulator = make_emulator()
    folder, db = _long(tmp_path / "in"), tmp_path / "k.duckdb"
    emulator.fail_next("invalid_json", count=2, match="Section marker020.")  # one map chunk and its repair
    first = run_pipeline(folder, db, emulator, concurrency=1, model="kimidocs-test-8k")
    log = emulator.requests("/chat/completions")
    maps = [e for e in log if e["answer_kind"] == "summary"]
    assert len(maps) > 3 and _status(db) == [("partial",)]
    assert db_rows(db, "SELECT coverage < 1.0 FROM summaries") == [(True,)]
    assert first.outcomes[0].status == "ok"
    second = run_pipeline(folder, db, emulator, concurrency=1, model="kimidocs-test-8k")
    again = emulator.requests("/chat/completions")[len(log) :]
    kinds = [e["answer_kind"] for e in again]
    assert kinds.count("summary") == 1  # only the chunk that failed is read again
    assert second.outcomes[0].status == "ok" and _status(db) == [("ok",)]
    assert db_rows(db, "SELECT coverage FROM summaries") == [(1.0,)]
    third = run_pipeline(folder, db, emulator, concurrency=1, model="kimidocs-test-8k")
    assert third.outcomes[0].status == "unchanged"


def test_unusable_answers_logged_ok_by_older_versions_are_not_reused(tmp_path: Path, make_emulator) -> None:
    """A database written before `unusable` existed holds such calls as `ok`: they are checked again."""
    emulator = make_emulator(invalid_json_rate=1.0)
    folder, db = _memo(tmp_path / "in"), tmp_path / "k.duckdb"
    run_pipeline(folder, db, emulator, concurrency=1)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE calls SET status = 'ok', error = NULL")
    emulator.configure(invalid_json_rate=0.0)
    again = run_pipeline(folder, db, emulator, concurrency=1)
    assert again.count("ok") == 1 and emulator.chat_requests() == 3
