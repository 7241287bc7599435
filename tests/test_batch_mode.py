"""Batch mode (issue 16 phase 2): a run's calls through the emulator's Batch API over a socket, in rounds
(singles and maps, then each reduce level), at 60 % of the real-time price, resumable, with fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

from kimidocs.costs import call_cost
from kimidocs.models import get_model
from kimidocs.records import Usage

FAST = {"batch_validate_s": 0.0, "batch_processing_s": 0.3, "batch_finalize_s": 0.0}


def write_docs(folder: Path, small: int = 3, long: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(small):
        (folder / f"note-{i}.txt").write_text(
            f"Memo {i}. The board met on 3 March 2026 and approved budget line {i} of 1,200 EUR. " * 20,
            encoding="utf-8",
        )
    if long:
        (folder / "zz-long.txt").write_text(
            "\n\n".join(
                f"Chapter {k}. "
                + " ".join(f"The committee reviewed item {k}-{w} in detail." for w in range(40))
                for k in range(60)
            ),
            encoding="utf-8",
        )


def _settings_env(monkeypatch) -> None:
    monkeypatch.setenv("KIMIDOCS_BATCH_POLL_S", "0.05")
    monkeypatch.setenv("KIMIDOCS_BATCH_TIMEOUT_S", "60")


def _list_cost(db: Path) -> float:
    model = get_model("kimidocs-test-8k")
    rows = db_rows(db, "SELECT prompt_tokens, completion_tokens FROM calls WHERE status <> 'error'")
    return sum(call_cost(Usage(prompt_tokens=p, completion_tokens=c), model) for p, c in rows)


def test_a_folder_in_batch_mode_costs_60_percent_of_real_time(
    tmp_path: Path, make_emulator, monkeypatch
) -> None:
    _settings_env(monkeypatch)
    write_docs(tmp_path / "in")
    live = make_emulator()
    inter = run_pipeline(tmp_path / "in", tmp_path / "i.duckdb", live, model="kimidocs-test-8k")
    emu = make_emulator(**FAST)
    batch = run_pipeline(tmp_path / "in", tmp_path / "b.duckdb", emu, model="kimidocs-test-8k", mode="batch")
    assert inter.count("ok") == batch.count("ok") == 4
    assert not [
        r for r in emu.requests() if r.get("path") == "/v1/chat/completions" and r.get("method") == "POST"
    ]
    b = tmp_path / "b.duckdb"
    rows = db_rows(b, "SELECT batch_id, stage, cost_usd, prompt_tokens, completion_tokens FROM calls")
    assert rows and all(r[0] for r in rows)  # every call answered by a batch
    assert {"single", "map", "reduce"} <= {r[1] for r in rows}
    batches = db_rows(b, "SELECT round, status, done, len(request_keys) FROM batches ORDER BY round")
    assert len(batches) >= 2 and all(done for _r, _s, done, _n in batches)  # maps, then reduce level(s)
    assert sum(n for *_x, n in batches) == len(rows)
    # Same work, same tokens: batch cost is 60 % of the list price of the same calls...
    assert batch.cost_usd == pytest.approx(0.6 * _list_cost(b), rel=1e-6)
    # ...and of the interactive run's calls at list price (the interactive run also had cache hits).
    assert batch.cost_usd == pytest.approx(0.6 * _list_cost(tmp_path / "i.duckdb"), rel=0.02)
    assert db_rows(b, "SELECT count(*) FROM summaries")[0][0] == 4
    assert db_rows(b, "SELECT status FROM runs")[0][0] == "completed"


def test_a_model_without_batches_falls_back_to_real_time(tmp_path: Path, make_emulator, monkeypatch) -> None:
    _settings_env(monkeypatch)
    write_docs(tmp_path / "in", small=2, long=False)
    emu = make_emulator(**FAST)
    report = run_pipeline(tmp_path / "in", tmp_path / "k.duckdb", emu, model="kimi-k3", mode="batch")
    assert report.count("ok") == 2
    assert db_rows(tmp_path / "k.duckdb", "SELECT count(*) FROM calls WHERE batch_id IS NOT NULL")[0][0] == 0
    assert not db_rows(tmp_path / "k.duckdb", "SELECT * FROM batches")


def test_a_tier0_account_answering_403_falls_back_to_real_time(
    tmp_path: Path, make_emulator, monkeypatch
) -> None:
    _settings_env(monkeypatch)
    write_docs(tmp_path / "in", small=2, long=False)
    emu = make_emulator(batch_api=False, **FAST)
    report = run_pipeline(tmp_path / "in", tmp_path / "k.duckdb", emu, model="kimidocs-test-8k", mode="batch")
    assert report.count("ok") == 2
    assert db_rows(tmp_path / "k.duckdb", "SELECT count(*) FROM calls WHERE batch_id IS NULL")[0][0] == 2


def test_a_rerun_picks_up_the_open_batch_and_never_submits_a_request_twice(
    tmp_path: Path, make_emulator, monkeypatch
) -> None:
    write_docs(tmp_path / "in")
    emu = make_emulator(batch_validate_s=0.0, batch_processing_s=3.0, batch_finalize_s=0.0)
    db = tmp_path / "k.duckdb"
    monkeypatch.setenv("KIMIDOCS_BATCH_POLL_S", "0.05")
    monkeypatch.setenv("KIMIDOCS_BATCH_TIMEOUT_S", "0.3")  # the first run gives up waiting
    with pytest.raises(Exception, match="still"):
        run_pipeline(tmp_path / "in", db, emu, model="kimidocs-test-8k", mode="batch")
    stored = db_rows(db, "SELECT batch_id, done FROM batches")
    assert len(stored) == 1 and not stored[0][1]
    assert db_rows(db, "SELECT count(*) FROM calls")[0][0] == 0
    monkeypatch.setenv("KIMIDOCS_BATCH_TIMEOUT_S", "60")
    report = run_pipeline(tmp_path / "in", db, emu, model="kimidocs-test-8k", mode="batch")
    assert report.count("ok") == 4
    lines = [r["custom_id"] for r in emu.requests() if r.get("method") == "BATCH"]
    assert lines and len(lines) == len(set(lines))  # no request went into two batches
    keys = [k for (k,) in db_rows(db, "SELECT request_key FROM calls")]
    assert len(keys) == len(set(keys)) == len(lines)  # every result stored once
    assert stored[0][0] in {b for (b,) in db_rows(db, "SELECT DISTINCT batch_id FROM calls")}
    assert all(done for (done,) in db_rows(db, "SELECT done FROM batches"))
