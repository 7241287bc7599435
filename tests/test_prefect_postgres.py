"""Issue 15.1 and 15.3: Prefect on PostgreSQL, and one run fanned out to child runs on the work pool.

The server keeps its state in a PostgreSQL database (`prefect_server_pg`); `prefect deploy --all` from
prefect.yaml, the kimi global limits, and a process worker running an `analyze-folder` run with
`fan_out` (its shards as `analyze-shard` child runs) all work against it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from postgres_fixture import PostgresServer
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixture import REPO, PrefectServer
from scale_helpers import make_documents, start_worker, stop_workers, wait_for
from test_prefect_deployments import deploy, trigger

from flows.deployments import ADHOC, FLOW_NAME
from flows.fanout import SHARD_DEPLOYMENT, SHARD_FLOW
from flows.prefect_limits import CONCURRENCY, RPM, TPM, existing_limits

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def pg_deployed(prefect_server_pg: PrefectServer) -> PrefectServer:
    deploy(prefect_server_pg)
    return prefect_server_pg


@pytest.fixture
def pg_api(pg_deployed: PrefectServer) -> Iterator[PrefectServer]:
    """This process's Prefect client pointed at the PostgreSQL-backed server."""
    with temporary_settings(updates={PREFECT_API_URL: pg_deployed.api_url}):
        yield pg_deployed


def flow_run(server: PrefectServer, run_id: str) -> dict:
    return server.api("GET", f"/flow_runs/{run_id}")  # type: ignore[return-value]


def test_deployments_live_in_postgresql(pg_deployed: PrefectServer, postgres: PostgresServer) -> None:
    names = postgres.psql(
        "SELECT f.name || '/' || d.name FROM deployment d JOIN flow f ON f.id = d.flow_id ORDER BY 1",
        dbname="prefect",
    ).split()
    assert {f"{FLOW_NAME}/{ADHOC}", f"{FLOW_NAME}/nightly", f"{SHARD_FLOW}/{SHARD_DEPLOYMENT}"} <= set(names)
    pools = postgres.psql("SELECT name, type FROM work_pool", dbname="prefect")
    assert "kimidocs|process" in pools
    assert not list(pg_deployed.home.glob("*.db")), "no SQLite file: the state is in PostgreSQL"


LIMITS_SCRIPT = """
from prefect.client.orchestration import get_client
from flows.prefect_limits import CONCURRENCY, PrefectLimiter, ensure_limits
from kimidocs.kimi.limits import RateLimits

limits = RateLimits(concurrency=3, rpm=30, tpm=1_000_000)
print("created", ",".join(sorted(ensure_limits(limits))), "again", ensure_limits(limits))
with PrefectLimiter(limits).acquire(1_000) as permit:
    permit.settle(900)
    with get_client(sync_client=True) as client:
        print("active", client.read_global_concurrency_limit_by_name(CONCURRENCY).active_slots)
"""


def test_kimi_limits_on_postgresql(pg_api: PrefectServer, postgres: PostgresServer) -> None:
    """ensure_limits and a call's slots, in a process of their own configured like a worker."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", LIMITS_SCRIPT],
            cwd=REPO,
            env=pg_api.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert f"created {','.join(sorted([CONCURRENCY, RPM, TPM]))} again []" in done.stdout
        assert "active 1" in done.stdout  # the call's slot was held on the server while it ran
        stored = postgres.psql('SELECT name, "limit" FROM concurrency_limit_v2 ORDER BY 1', dbname="prefect")
        assert f"{CONCURRENCY}|3" in stored and f"{RPM}|3" in stored and TPM in stored
        assert existing_limits()[CONCURRENCY].limit == 3
    finally:
        with get_client(sync_client=True) as client:
            for name in (CONCURRENCY, RPM, TPM):
                with contextlib.suppress(ObjectNotFound):
                    client.delete_global_concurrency_limit_by_name(name)


def test_a_worker_runs_a_fanned_out_run(pg_deployed: PrefectServer, emulator_process, tmp_path: Path) -> None:
    """analyze-folder with fan_out=2 on one worker: two analyze-shard child runs, one kimidocs run."""
    emulator = emulator_process()
    folder, db = tmp_path / "in", tmp_path / "k.duckdb"
    docs = make_documents(folder, 6)
    env = {
        **emulator.worker_env(),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "KIMIDOCS_TIER": "tier3",  # shared limits on: the calls take Prefect slots on PostgreSQL
    }
    workers = [start_worker(pg_deployed, "solo", tmp_path / "worker", env)]
    try:
        started = time.monotonic()
        parent = trigger(
            pg_deployed,
            f"{FLOW_NAME}/{ADHOC}",
            folder=str(folder),
            db=str(db),
            fan_out="2",
            pack="false",
            concurrency="2",
        )
        state = wait_for(
            lambda: (s := flow_run(pg_deployed, parent)["state"])["type"] in TERMINAL and s,
            240,
            "the fanned-out run to finish",
            every_s=1.0,
        )
        print(f"fan_out=2, 1 worker, 6 documents: {time.monotonic() - started:.1f}s")
        assert state["type"] == "COMPLETED", (state, workers[0].output()[-4000:])
    finally:
        stop_workers(workers)

    children = pg_deployed.api(
        "POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}}
    )
    assert isinstance(children, list) and len(children) == 2
    assert {c["state"]["type"] for c in children} == {"COMPLETED"}
    assert {c["deployment_id"] for c in children} == {
        pg_deployed.api("GET", f"/deployments/name/{SHARD_FLOW}/{SHARD_DEPLOYMENT}")["id"]  # type: ignore[index]
    }
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute(
            "SELECT status, flow_run_id, documents_ok, documents_failed, calls, cost_usd FROM runs"
        ).fetchall()
        summaries = con.execute("SELECT count(*), count(DISTINCT run_id) FROM summaries").fetchone()
        calls = con.execute("SELECT count(*), sum(cost_usd) FROM calls WHERE status = 'ok'").fetchone()
    assert len(runs) == 1, runs  # one run, opened by the parent, attached to by both children
    status, flow_run_id, ok, failed, n_calls, cost = runs[0]
    assert (status, flow_run_id, ok, failed) == ("completed", parent, len(docs), 0)
    assert summaries == (len(docs), 1)
    assert n_calls == calls[0] == len(docs) and cost == pytest.approx(calls[1])
    arts = pg_deployed.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [parent]}}})
    reports = [a for a in arts if a["key"] == "kimidocs-run-report"]  # type: ignore[union-attr]
    assert len(reports) == 1 and "doc-0005" in reports[0]["data"]


def test_a_fanned_out_run_holds_the_runs_cap(
    pg_deployed: PrefectServer, emulator_process, make_emulator, tmp_path: Path
) -> None:
    """Issue 23.3 through Prefect: `fan_out=3` (three child flow runs, each its own process) with a cap at
    half of what the folder costs: the run as a whole spends at most the cap (before, each child could
    spend it all)."""
    from conftest import run_pipeline
    from test_run_budget import _notes

    folder, db = _notes(tmp_path / "in", 9, repeat=800), tmp_path / "k.duckdb"
    cap = run_pipeline(folder, tmp_path / "probe.duckdb", make_emulator(), pack=False).cost_usd / 2
    emulator = emulator_process()  # a cold prefix cache, as for the probe
    env = {**emulator.worker_env(), "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    workers = [start_worker(pg_deployed, "solo", tmp_path / "worker", env)]
    try:
        parent = trigger(
            pg_deployed,
            f"{FLOW_NAME}/{ADHOC}",
            folder=str(folder),
            db=str(db),
            fan_out="3",
            pack="false",
            max_cost_usd=str(cap),
            fail_on_document_errors="false",
        )
        state = wait_for(
            lambda: (s := flow_run(pg_deployed, parent)["state"])["type"] in TERMINAL and s,
            300,
            "the fanned-out run to finish",
            every_s=1.0,
        )
        assert state["type"] == "COMPLETED", (state, workers[0].output()[-4000:])
    finally:
        stop_workers(workers)
    with duckdb.connect(str(db), read_only=True) as con:
        (spent,) = con.execute("SELECT sum(cost_usd) FROM calls").fetchone()  # type: ignore[misc]
        (over,) = con.execute("SELECT count(*) FROM failures WHERE error_type = 'BudgetExceeded'").fetchone()  # type: ignore[misc]
        (ok,) = con.execute("SELECT documents_ok FROM runs").fetchone()  # type: ignore[misc]
    print(f"fan_out=3, cap at half the folder's cost: spent / cap = {spent / cap:.3f}, {ok} of 9 documents")
    assert spent <= cap and over >= 1 and ok >= 1
