"""The store writes and reads by column name, with the names derived from the record dataclasses."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from kimidocs.core.records import CallRecord, Usage
from kimidocs.store import Store
from kimidocs.store.columns import CALL_COLUMNS


def _columns(db: Path, table: str) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    return {r[0] for r in rows}


def test_every_call_record_field_is_a_calls_column(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Store(db).migrate()
    Store(db).close()
    assert set(CALL_COLUMNS) == _columns(db, "calls")


def test_a_call_round_trips_field_by_field(tmp_path: Path) -> None:
    """Every field distinct and non-default, so a swapped or shifted column cannot pass."""
    call = CallRecord(
        call_id="c1",
        run_id="r1",
        doc_id="d1",
        stage="map",
        request_key="k1",
        model="kimi-k2.5",
        backend="emulator",
        chunk_index=3,
        level=4,
        prompt_tokens_est=1111,
        usage=Usage(prompt_tokens=1000, cached_tokens=512, completion_tokens=77),
        cost_usd=0.00123,
        latency_ms=45.5,
        ttft_ms=12.25,
        attempts=2,
        finish_reason="stop",
        http_status=200,
        status="ok",
        error="none really",
        response='{"title": "x"}',
        started_at=datetime(2026, 12, 6, 5, 0, 1, tzinfo=UTC),
        usage_source="reported",
    )
    assert len({repr(getattr(call, f.name)) for f in fields(call)}) == len(fields(call))
    store = Store(tmp_path / "k.duckdb")
    store.save_calls([call])
    try:
        assert store.find_completed_call("k1") == call
    finally:
        store.close()
