"""kimidocs.run.shards: shards for child runs, and outcomes settled by what the run paid (milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kimidocs.core.records import CallTotals, DocumentStatus
from kimidocs.run.context import DocumentOutcome
from kimidocs.run.discover import FoundFile
from kimidocs.run.shards import LOST_SHARD, lost_shard, paid_by_run, settle, split_files

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def files(*sizes: int) -> list[FoundFile]:
    return [FoundFile(f"/in/{i:03d}.pdf", size, NOW) for i, size in enumerate(sizes)]


def test_every_file_lands_in_exactly_one_batch_in_folder_order() -> None:
    found = files(*range(1, 50))
    shards = split_files(found, 4)
    assert len(shards) == 4 and all(shards)
    assert sorted(f.path for b in shards for f in b) == [f.path for f in found]
    for shard in shards:
        assert shard == sorted(shard, key=lambda f: f.path)


def test_batches_are_balanced_by_bytes_and_a_big_document_stays_whole() -> None:
    found = files(1_000_000, *([10_000] * 100))
    shards = split_files(found, 3)
    loads = sorted(sum(f.size for f in b) for b in shards)
    assert [f.size for f in shards[0]] == [1_000_000]  # alone: the others share the small ones
    assert loads == [500_000, 500_000, 1_000_000]


def test_never_more_batches_than_files_and_none_for_an_empty_folder() -> None:
    assert [len(b) for b in split_files(files(5, 5), 8)] == [1, 1]
    assert split_files([], 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        split_files(files(1), 0)


def test_split_is_deterministic() -> None:
    found = files(*[(i * 7919) % 1000 for i in range(60)])
    assert split_files(found, 5) == split_files(list(found), 5)


def test_settle_takes_the_store_totals_and_marks_this_runs_work_ok() -> None:
    outcomes = [
        DocumentOutcome("/in/a.pdf", DocumentStatus.OK, doc_id="a", calls=1, cost_usd=0.5),
        # finished by a child that crashed; its re-run found it stored
        DocumentOutcome("/in/b.pdf", DocumentStatus.UNCHANGED, doc_id="b"),
        # done by an earlier run: nothing paid in this one
        DocumentOutcome("/in/c.pdf", DocumentStatus.UNCHANGED, doc_id="c"),
        DocumentOutcome("/in/d.pdf", DocumentStatus.FAILED, error_type="EmptyDocument"),
    ]
    paid = {"a": CallTotals(2, 100, 10, 20, 0.75), "b": CallTotals(1, 50, 0, 10, 0.25)}
    settled = settle(outcomes, paid)
    assert [o.status for o in settled] == ["ok", "ok", "unchanged", "failed"]
    assert settled[0].totals == paid["a"] and settled[1].totals == paid["b"]
    assert settled[2] == outcomes[2] and settled[3] == outcomes[3]


def test_a_lost_shard_fails_its_documents_with_the_reason() -> None:
    lost = lost_shard(files(1, 2), "child run x did not finish: Crashed")
    assert [(o.status, o.error_type) for o in lost] == [("failed", LOST_SHARD)] * 2
    assert all("Crashed" in (o.message or "") for o in lost)


def test_paid_by_run_counts_the_runs_calls_per_document(tmp_path: Path) -> None:
    from kimidocs.store import Store

    with Store(tmp_path / "k.duckdb") as store:
        store.migrate()
        rows = [
            ("c1", "r1", "a", "ok", 100, 10, 20, 0.5),
            ("c2", "r1", "a", "unusable", 100, 100, 20, 0.25),
            ("c3", "r1", "a", "error", 0, 0, 0, 0.0),
            ("c4", "r1", "b", "ok", 7, 0, 3, 0.125),
            ("c5", "r2", "a", "ok", 999, 0, 9, 9.0),
        ]
        for call_id, run, doc, status, p, c, o, cost in rows:
            store.query(
                "INSERT INTO calls (call_id, run_id, doc_id, stage, request_key, model, backend, "
                "prompt_tokens, "
                "cached_tokens, completion_tokens, cost_usd, attempts, status) "
                "VALUES (?, ?, ?, 'single', 'k', 'm', 'emulator', ?, ?, ?, ?, 1, ?)",
                [call_id, run, doc, p, c, o, cost, status],
            )
        paid = paid_by_run(store, "r1")
    assert paid == {"a": CallTotals(2, 200, 110, 40, 0.75), "b": CallTotals(1, 7, 0, 3, 0.125)}
