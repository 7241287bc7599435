"""Issue 16 through Prefect: `prefect deployment run analyze-folder/nightly` in batch mode, end to end.

A real Prefect server, the deployments of prefect.yaml, process workers, the emulator in its own process
(its Batch API takes a few seconds per batch). The nightly deployment waits `batch_wait_s` for a batch,
then hands it to a follow-up flow run it schedules itself: no worker waits while Kimi works. A worker
killed while its flow run waits for a batch loses nothing: the next run finds the batch in DuckDB.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows
from prefect_fixture import PrefectServer
from scale_helpers import kill_machine, start_worker, stop_workers, wait_for
from test_batch_mode import write_docs
from test_prefect_deployments import deploy, flow_run, trigger

from flows.deployments import FLOW_NAME, NIGHTLY, WORK_POOL
from kimidocs.emulator import EmulatorProcess

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

NIGHTLY_RUN = f"{FLOW_NAME}/{NIGHTLY}"
WAIT_S = 180.0
MODEL = "kimidocs-test-8k"  # small window: the long note is map-reduced, so batches come in rounds


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> PrefectServer:
    deploy(prefect_server)
    return prefect_server


def nightly_runs(server: PrefectServer) -> list[dict]:
    runs = server.api("POST", "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return [
        r for r in runs if r.get("deployment_id") and r["name"] and r["parameters"].get("mode") == "batch"
    ]  # type: ignore[union-attr]


def batches_created(emulator: EmulatorProcess) -> list[dict]:
    return [r for r in emulator.requests() if r["path"].endswith("/batches") and r.get("method") == "POST"]


def test_nightly_hands_a_running_batch_to_a_follow_up_run(
    deployed: PrefectServer, emulator_process, tmp_path: Path
) -> None:
    """The flow run waits 1 s, then schedules a follow-up 2 s later and ends; the follow-up collects the
    batch (and the next rounds), each batch created once, every document summarised once."""
    emulator = emulator_process(batch_validate_s=0.0, batch_processing_s=3.0, batch_finalize_s=0.0)
    folder, db = tmp_path / "in", tmp_path / "nightly.duckdb"
    write_docs(folder)
    env = {**emulator.worker_env(), "KIMIDOCS_BATCH_POLL_S": "0.2", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    first = trigger(deployed, NIGHTLY_RUN, folder=str(folder), db=str(db), model=MODEL,
                    batch_wait_s="1", batch_recheck_s="2")  # fmt: skip
    worker = start_worker(deployed, "nightly", tmp_path / "worker", env)
    try:
        wait_for(
            lambda: flow_run(deployed, first)["state"]["type"] == "COMPLETED", WAIT_S, "the first run to end"
        )
        wait_for(
            lambda: db.exists() and _summaries(db) == 4 and _all_runs_final(deployed, db),
            WAIT_S,
            "every document summarised",
        )
    finally:
        stop_workers([worker])
    runs = [r for r in nightly_runs(deployed) if r["parameters"].get("db") == str(db)]
    assert len(runs) >= 2, "the first run handed its batch to a follow-up run"
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}
    follow_ups = [r for r in runs if "batch-follow-up" in r["tags"]]
    assert follow_ups and all(r["parameters"] == runs[0]["parameters"] for r in follow_ups)
    logs = deployed.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [first]}}, "limit": 200})
    assert any("follow-up flow run" in e["message"] for e in logs)  # type: ignore[union-attr]
    # Each round's batch was created once; no request went into two batches; every result stored once.
    lines = [r["custom_id"] for r in emulator.requests() if r.get("method") == "BATCH"]
    assert len(lines) == len(set(lines))
    assert db_rows(db, "SELECT count(*) FROM batches WHERE done") == [(len(batches_created(emulator)),)]
    keys = [k for (k,) in db_rows(db, "SELECT request_key FROM calls WHERE status = 'ok'")]
    assert len(keys) == len(set(keys))
    assert db_rows(db, "SELECT count(*) FROM calls WHERE batch_id IS NULL AND status = 'ok'") == [(0,)]
    # The first run's report says where its documents are: waiting for the batch, not failed.
    first_run = db_rows(db, "SELECT run_id FROM runs WHERE flow_run_id = ?", [first])
    assert first_run, "the first flow run recorded its kimidocs run"


def test_a_worker_killed_while_waiting_loses_nothing(
    deployed: PrefectServer, emulator_process, tmp_path: Path
) -> None:
    """SIGKILL the worker (and the flow run it started) once the batch exists; the next nightly run picks
    the stored batch up: the emulator created it once, and every result is stored once."""
    emulator = emulator_process(batch_validate_s=0.0, batch_processing_s=4.0, batch_finalize_s=0.0)
    folder, db = tmp_path / "in", tmp_path / "killed.duckdb"
    write_docs(folder, long=False)
    env = {**emulator.worker_env(), "KIMIDOCS_BATCH_POLL_S": "0.2", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    first = trigger(deployed, NIGHTLY_RUN, folder=str(folder), db=str(db), model=MODEL, batch_wait_s="600")
    worker = start_worker(deployed, "first", tmp_path / "first", env)
    try:
        wait_for(lambda: len(batches_created(emulator)) == 1, WAIT_S, "the batch to be created")
        wait_for(lambda: _stored_batch_ids(db) == 1, WAIT_S, "its id stored")
        kill_machine(worker)  # the worker and the flow run it started
    finally:
        stop_workers([worker])
    assert flow_run(deployed, first)["state"]["type"] != "COMPLETED"  # nobody runs it any more
    second = trigger(deployed, NIGHTLY_RUN, folder=str(folder), db=str(db), model=MODEL, batch_wait_s="600")
    worker = start_worker(deployed, "second", tmp_path / "second", env)
    try:
        wait_for(lambda: flow_run(deployed, second)["state"]["type"] == "COMPLETED", WAIT_S, "the second run")
    finally:
        stop_workers([worker])
    assert len(batches_created(emulator)) == 1, "the stored batch was collected, not submitted again"
    lines = [r["custom_id"] for r in emulator.requests() if r.get("method") == "BATCH"]
    assert len(lines) == len(set(lines)) == 3
    assert db_rows(db, "SELECT count(*), count(DISTINCT request_key) FROM calls WHERE status = 'ok'") == [
        (3, 3)
    ]
    assert db_rows(db, "SELECT count(*) FROM summaries") == [(3,)]


def test_nightly_on_tier0_falls_back_to_interactive(
    deployed: PrefectServer, emulator_process, tmp_path: Path
) -> None:
    emulator = emulator_process()
    folder, db = tmp_path / "in", tmp_path / "tier0.duckdb"
    write_docs(folder, small=2, long=False)
    env = {**emulator.worker_env(), "KIMIDOCS_TIER": "tier0"}
    run = trigger(deployed, NIGHTLY_RUN, folder=str(folder), db=str(db), model=MODEL)
    proc = deployed.cli(
        "worker", "start", "--pool", WORK_POOL, "--run-once", extra_env=env, timeout=240, check=False
    )
    state = flow_run(deployed, run)["state"]
    assert state["type"] == "COMPLETED", (state, proc.stdout[-3000:], proc.stderr[-3000:])
    assert batches_created(emulator) == []
    logs = deployed.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run]}}, "limit": 200})
    assert any("Tier0 accounts cannot use the Batch API" in e["message"] for e in logs)  # type: ignore[union-attr]
    assert db_rows(db, "SELECT count(*) FROM calls WHERE batch_id IS NULL AND status = 'ok'") == [(2,)]


def _summaries(db: Path) -> int:
    try:
        return db_rows(db, "SELECT count(*) FROM summaries")[0][0]
    except Exception:  # the run holds the file for a moment
        return -1


def _stored_batch_ids(db: Path) -> int:
    try:
        return db_rows(db, "SELECT count(*) FROM batches WHERE batch_id IS NOT NULL")[0][0]
    except Exception:
        return 0


def _all_runs_final(server: PrefectServer, db: Path) -> bool:
    """No run of this test's database is still to come or running (follow-ups included)."""
    mine = [r for r in nightly_runs(server) if r["parameters"].get("db") == str(db)]
    return all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") for r in mine)
