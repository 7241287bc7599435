"""An old database (migration 1 only, with rows) is upgraded in place by the current code, rows intact."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from kimidocs.core.records import CallRecord
from kimidocs.store import MigrationError, Store
from kimidocs.store import migrate as migrations
from kimidocs.store.connection import CONFIG


def _build_v1(db: Path) -> None:
    """What a database written by the first release looks like: tables only, no prices, no views."""
    con = duckdb.connect(str(db), config=CONFIG)
    try:
        assert migrations.apply(con, db, upto=1) == [1]
        con.execute(
            "INSERT INTO documents (doc_id, kind, pages, status, warnings, path) "
            "VALUES ('d1', 'pdf', 2, 'ok', ['w'], 'in/a.pdf')"
        )
        con.execute("INSERT INTO pages VALUES ('d1', 1, 'd1:1', NULL, 'old text one', 12, 3, 0)")
        con.execute(
            "INSERT INTO calls (call_id, run_id, doc_id, stage, request_key, model, backend, prompt_tokens, "
            "cached_tokens, completion_tokens, cost_usd, attempts, status, started_at) VALUES "
            "('c1', 'r1', 'd1', 'single', 'k1', 'kimi-k2.5', 'kimi', 1000000, 500000, 1000, 0.4, 1, 'ok', "
            "TIMESTAMP '2026-01-01 00:00:00')"
        )
        con.execute(
            "INSERT INTO summaries (doc_id, profile, prompt_version, model, backend, created_at, summary, "
            "amounts) VALUES ('d1', 'summary', 'v1', 'kimi-k2.5', 'kimi', TIMESTAMP '2026-01-01 00:00:00', "
            "'old', [{'value': 12.5, 'value_text': '$12.50', 'currency': 'USD', 'what': 'fee', "
            "'pages': [1]}])"
        )
    finally:
        con.close()


def test_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    _build_v1(db)
    ro = Store(db, read_only=True)
    assert ro.query("SELECT max(version) FROM schema_migrations").rows == ((1,),)
    assert "latest_summaries" not in {name for name, _ in ro.relations()}

    store = Store(db)
    applied = store.migrate()
    assert applied == [m.version for m in migrations.available() if m.version > 1]
    assert store.schema_version() == migrations.available()[-1].version
    # rows written by the old code are intact and visible through the new views
    assert store.query("SELECT doc_id, warnings, path FROM documents").rows == (("d1", ["w"], "in/a.pdf"),)
    assert store.query("SELECT text FROM pages").rows == (("old text one",),)
    assert store.query("SELECT value, value_text, path FROM summary_amounts").rows[0][1:] == (
        "$12.50",
        "in/a.pdf",
    )
    saved = store.query("SELECT saved_usd FROM cache_efficiency").rows[0][0]
    assert saved == pytest.approx(500_000 * (0.60 - 0.10) / 1e6)
    # and the new code writes into the upgraded file
    assert store.find_completed_call("k1").usage.cached_tokens == 500_000
    store.save_call(
        CallRecord("c2", "r2", "d1", "single", "k2", "kimi-k2.5", "kimi", started_at=datetime.now(UTC))
    )
    assert store.query("SELECT count(*) FROM calls").rows == ((2,),)
    assert store.migrate() == []
    store.close()


def test_a_failing_migration_is_rolled_back_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "k.duckdb"
    _build_v1(db)
    broken = [
        *migrations.available(),
        migrations.Migration(99, "broken", "CREATE VIEW x AS SELECT nope FROM pages;"),
    ]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    store = Store(db)
    with pytest.raises(MigrationError, match="migration 0099 \\(broken\\) failed"):
        store.migrate()
    store.close()
    versions = (
        Store(db, read_only=True).query("SELECT list(version ORDER BY version) FROM schema_migrations").rows
    )
    assert versions[0][0][-1] == broken[-2].version  # everything before 99 applied, 99 not recorded


def test_0010_keeps_stored_batches_and_allows_a_pending_row(tmp_path: Path) -> None:
    db = tmp_path / "v9.duckdb"
    con = duckdb.connect(str(db), config=CONFIG)
    try:
        migrations.apply(con, db, upto=9)
        con.execute(
            "INSERT INTO batches VALUES ('b1', 'r1', 'in', 'kimi-k2.5', 'f1', 1, ['k1', 'k2'], "
            "'in_progress', 0.5, TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:00', false)"
        )
    finally:
        con.close()
    store = Store(db)
    assert store.migrate() == [m.version for m in migrations.available() if m.version > 9]
    (old,) = store.open_batches("in", "kimi-k2.5")
    assert (old.batch_id, old.input_file_id, old.request_keys, old.status) == (
        "b1",
        "f1",
        ("k1", "k2"),
        "in_progress",
    )
    store.save_batch(replace(old, batch_id=None, input_file_id="f2", round=2, status="pending"))
    store.set_batch_id("f2", "b2", "validating")
    store.update_batch("f1", "completed", done=True)
    assert [(r.batch_id, r.status) for r in store.open_batches("in", "kimi-k2.5")] == [("b2", "validating")]
    store.close()


def test_0012_drops_the_index_runs_left_in_the_file_and_search_still_finds_the_pages(tmp_path: Path) -> None:
    """Runs rebuilt `fts_main_pages` in the file until 0012; left there it would only grow stale."""
    from kimidocs.store.connection import load_fts

    db = tmp_path / "v10.duckdb"
    con = duckdb.connect(str(db), config=CONFIG)
    try:
        migrations.apply(con, db, upto=10)
        con.execute(
            "INSERT INTO documents (doc_id, kind, pages, status, warnings, path, extracted_at) "
            "VALUES ('d1', 'pdf', 1, 'ok', [], 'in/a.pdf', TIMESTAMP '2026-01-01 00:00:00')"
        )
        con.execute("INSERT INTO pages VALUES ('d1', 1, 'd1:1', NULL, 'an old page about gaskets', 25, 6, 0)")
        load_fts(con)
        con.execute("PRAGMA create_fts_index('pages', 'page_id', 'text', overwrite = 1)")
    finally:
        con.close()
    store = Store(db)
    assert 12 in store.migrate()
    schemas = store.query("SELECT list(schema_name) FROM duckdb_schemas()").rows[0][0]
    assert "fts_main_pages" not in schemas
    assert [(h.doc_id, h.path) for h in Store(db, read_only=True).search("gaskets")] == [("d1", "in/a.pdf")]
    store.close()
