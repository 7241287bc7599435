"""Issue 15 end to end: many workers, one DuckLake, one account's limits, and a worker that dies mid-run.

PostgreSQL (Prefect's database and the lake's catalog), a Prefect server on it, Redis (the shared Kimi
limiter), three process workers on one pool standing in for machines (each its own process group and
PREFECT_HOME), the emulator as a Tier1 account on a 10x faster clock (200 requests per 6 s window, 50 at
once) that answers 429 to anything over its limits. About 300 small documents and one long one (map-reduced
with a 32k-token model) go through `prefect deployment run analyze-folder/adhoc --param fan_out=4`; the run's
shards are `analyze-shard` child runs. One worker is killed (SIGKILL, every process under it) once its child
has stored a document: Prefect's zombie automation marks that child Crashed when its heartbeats stop, the
parent sets it back to Scheduled, another worker runs it, and what the dead one had finished is not paid
again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from lake_fixture import new_lake
from postgres_fixture import PostgresServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixture import PrefectServer
from redis_fixture import RedisServer
from scale_helpers import Worker, hosts, kill_machine, make_documents, start_worker, stop_workers, wait_for
from test_prefect_deployments import deploy, trigger

from flows.deployments import ADHOC, FLOW_NAME
from flows.serve import ensure_zombie_automation
from kimidocs.emulator import EmulatorProcess
from kimidocs.store import Store

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

DOCUMENTS = 300  # small ones, plus LONG
LONG = "zz-long-report.txt"  # map-reduced: several calls, all on one worker
MODEL = "kimidocs-test-32k"
CHILDREN = 4
RUNS_PER_WORKER = 2  # `prefect worker start --limit`: the parent and a child, or two children
CONCURRENCY = 2  # documents in flight per child run
HEARTBEAT_S = 30  # Prefect's minimum
ZOMBIE_AFTER_S = 60  # no heartbeat for this long after one: Crashed (two heartbeats of slack)
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: A call the dead worker had back this long before the kill must have been stored (not paid again).
STORED_WITHIN_S = 3.0


@dataclass
class Killed:
    """What happened: the runs, the victim, and when."""

    parent: str
    victim_run: str
    victim_worker: str
    killed_at: float
    seconds: float


def api_list(server: PrefectServer, path: str, body: dict) -> list[dict]:
    found = server.api("POST", path, body)
    assert isinstance(found, list)
    return found


def children_of(server: PrefectServer, parent: str) -> list[dict]:
    return api_list(server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})


def stored_a_document(server: PrefectServer, run_id: str) -> bool:
    logs = api_list(server, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return any(": ok (1 calls" in entry["message"] for entry in logs)


def pick_victim(server: PrefectServer, parent: dict, workers: list[Worker]) -> tuple[dict, Worker] | None:
    """A Running child that has stored a document, on a worker that does not run the parent."""
    for child in children_of(server, parent["id"]):
        if child["state"]["type"] != "RUNNING":
            continue
        for worker in workers:
            mine = hosts(worker, child["infrastructure_pid"]) and not hosts(
                worker, parent["infrastructure_pid"]
            )
            if mine and stored_a_document(server, child["id"]):
                return child, worker
    return None


def run_and_kill(
    server: PrefectServer, workers: list[Worker], folder: Path, db: str, timeout_s: float = 420
) -> Killed:
    """Trigger a fanned-out run, kill the machine of one child mid-shard, wait for the run to end."""
    started = time.monotonic()
    parent_id = trigger(
        server,
        f"{FLOW_NAME}/{ADHOC}",
        folder=str(folder),
        db=db,
        fan_out=str(CHILDREN),
        model=MODEL,
        pack="false",
        concurrency=str(CONCURRENCY),
    )

    def victim() -> tuple[dict, Worker] | None:
        parent = server.api("GET", f"/flow_runs/{parent_id}")
        assert isinstance(parent, dict) and parent["state"]["type"] not in TERMINAL, (
            parent["state"].get("message"),
            "\n".join(w.output()[-3000:] for w in workers),
        )
        return pick_victim(server, parent, workers)

    child, worker = wait_for(victim, 180, "a running child that stored a document", every_s=0.5)
    killed_at = time.time()
    kill_machine(worker)
    wait_for(
        lambda: server.api("GET", f"/flow_runs/{parent_id}")["state"]["type"] in TERMINAL,  # type: ignore[index]
        timeout_s,
        "the run to finish after the kill",
        every_s=1.0,
    )
    return Killed(parent_id, child["id"], worker.name, killed_at, time.monotonic() - started)


def state_times(server: PrefectServer, run_id: str) -> list[tuple[str, float]]:
    """The run's state history as (type, unix time)."""
    from datetime import datetime

    states = server.api("GET", f"/flow_run_states/?flow_run_id={run_id}")
    assert isinstance(states, list)
    return sorted(
        (
            (s["type"], datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp())
            for s in states
        ),
        key=lambda item: item[1],
    )


def write_long(folder: Path) -> None:
    chapters = [
        f"Chapter {k}. "
        + " ".join(f"The auditors reviewed ledger {k}-{w} and found it complete." for w in range(60))
        for k in range(70)
    ]
    (folder / LONG).write_text("\n\n".join(chapters), encoding="utf-8")


def test_many_workers_one_lake_one_account_and_a_killed_worker(
    prefect_server_pg: PrefectServer,
    postgres: PostgresServer,
    redis_server: RedisServer,
    emulator_process,
    tmp_path: Path,
) -> None:
    server = prefect_server_pg
    deploy(server)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        ensure_zombie_automation(within_s=ZOMBIE_AFTER_S)
    emulator: EmulatorProcess = emulator_process(tier="tier1", time_scale=0.1, latency_ms=400)
    lake = new_lake(postgres, tmp_path)
    folder, db = tmp_path / "in", lake.db
    make_documents(folder, DOCUMENTS)
    write_long(folder)
    env = {
        **emulator.worker_env(),
        "KIMIDOCS_LAKE_DATA_PATH": lake.data_path,
        "KIMIDOCS_TIER": "tier1",
        "KIMIDOCS_LIMITS_URL": redis_server.url(db=3),
        "KIMIDOCS_LIMITS_TIME_SCALE": "0.1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        # The children's returned outcomes: on shared storage, as on several machines.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
    }
    workers = [
        start_worker(server, f"machine-{n}", tmp_path / f"machine-{n}", env, limit=RUNS_PER_WORKER)
        for n in (1, 2, 3)
    ]
    try:
        killed = run_and_kill(server, workers, folder, db)
    finally:
        stop_workers(workers)
    outputs = "\n".join(w.output()[-3000:] for w in workers)

    # The run completed; the dead child was crashed by the automation, run again and completed.
    parent = server.api("GET", f"/flow_runs/{killed.parent}")
    assert isinstance(parent, dict) and parent["state"]["type"] == "COMPLETED", (parent["state"], outputs)
    victim = server.api("GET", f"/flow_runs/{killed.victim_run}")
    assert isinstance(victim, dict) and victim["state"]["type"] == "COMPLETED"
    history = state_times(server, killed.victim_run)
    types = [t for t, _ in history]
    assert "CRASHED" in types and types.count("RUNNING") >= 2, types
    crashed_at = next(at for t, at in history if t == "CRASHED")
    rerun_at = [at for t, at in history if t == "RUNNING"][-1]
    done_at = history[-1][1]
    print(
        f"\n{DOCUMENTS} documents, {CHILDREN} children, 3 workers: run {killed.seconds:.1f}s; "
        f"killed {killed.victim_worker}; Crashed {crashed_at - killed.killed_at:.1f}s after the kill, "
        f"running again {rerun_at - killed.killed_at:.1f}s, completed {done_at - killed.killed_at:.1f}s after"
    )
    assert all(c["state"]["type"] == "COMPLETED" for c in children_of(server, killed.parent))

    # Every document analysed exactly once; no duplicate rows; one run with one set of totals.
    with Store(db, read_only=True) as store:
        one = store.query(
            "SELECT count(*), count(DISTINCT doc_id) FROM documents UNION ALL "
            "SELECT count(*), count(DISTINCT doc_id) FROM summaries UNION ALL "
            "SELECT count(*), count(DISTINCT request_key) FROM calls"
        ).rows
        runs = store.query(
            "SELECT status, documents_ok, documents_failed, calls, cost_usd, flow_run_id FROM runs"
        ).rows
        paid = store.query("SELECT count(*), sum(cost_usd) FROM calls WHERE status = 'ok'").rows[0]
        per_doc = store.query(
            "SELECT d.path, count(*) FROM calls c JOIN documents d USING (doc_id) GROUP BY d.path "
            "HAVING count(*) > 1"
        ).rows
    docs = DOCUMENTS + 1
    assert list(one[:2]) == [(docs, docs)] * 2, one
    calls_total, distinct_keys = one[2]
    assert calls_total == distinct_keys, "a request stored twice"
    assert [Path(p).name for p, _ in per_doc] == [LONG], per_doc  # only the long one took several calls
    assert len(runs) == 1
    status, ok, failed, calls, cost, flow_run_id = runs[0]
    assert (status, ok, failed, flow_run_id) == ("completed", docs, 0, killed.parent)
    assert calls == paid[0] == calls_total and cost == pytest.approx(paid[1])

    # The account's limits held for all workers together: the emulator refused nothing.
    answered = emulator.requests("/chat/completions")
    assert [e for e in answered if e["status"] == 429] == []
    assert max(e["concurrency_at_arrival"] for e in answered) < 50

    # Calls the dead worker had back (and stored) were reused, not paid again: a request completed
    # twice by the emulator was in flight when the machine died.
    completed: dict[str, list[dict]] = defaultdict(list)
    for entry in emulator.requests("/chat/completions"):
        if entry["status"] == 200:
            completed[entry["request_hash"]].append(entry)
    twice = {key: entries for key, entries in completed.items() if len(entries) > 1}
    for key, entries in twice.items():
        first = min(entries, key=lambda e: e["time"])
        finished = first["time"] + first["duration_ms"] / 1000
        assert finished >= killed.killed_at - STORED_WITHIN_S, (key, finished - killed.killed_at)
    print(f"calls completed twice (in flight at the kill): {len(twice)}")
    assert len(twice) <= RUNS_PER_WORKER * CONCURRENCY  # at most what the dead machine had in flight
    assert len(completed) == calls_total
