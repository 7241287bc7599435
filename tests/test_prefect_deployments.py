"""prefect.yaml against a real Prefect server: pool, `prefect deploy --all`, a worker runs adhoc end to end.

The Kimi side is the emulator as its own process on a loopback port; the worker gets its URL and a key
in its environment, exactly like a production worker gets the real ones. Every subprocess is bounded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml
from prefect_fixture import BIN, REPO, PrefectServer, clean_env

from flows.deployments import ADHOC, FLOW_NAME, INBOX, NIGHTLY, NIGHTLY_CRON, TIMEZONE, WORK_POOL
from kimidocs.emulator import EmulatorProcess

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

CORPUS_PICKS = ("pdf/crazyones.pdf", "docx/lorem_ipsum.docx", "pdf/multi_page.pdf")


def deploy(server: PrefectServer) -> None:
    """Pool + `prefect deploy --all` once per server (a second call only re-registers, idempotently)."""
    pools = server.cli("work-pool", "ls", "-o", "json", check=False)
    if WORK_POOL not in pools.stdout:
        server.cli("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite")
    server.cli("deploy", "--all", timeout=120)  # no KIMIDOCS_HOME: the checkout kimidocs runs from


def trigger(server: PrefectServer, name: str, job_env: dict[str, str] | None = None, **params: str) -> str:
    """`prefect deployment run NAME --param k=v ...` without --watch; returns the flow run id."""
    args = ["deployment", "run", name]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    if job_env is not None:
        args += ["--job-variable", f"env={json.dumps(job_env)}"]
    out = server.cli(*args).stdout
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def run_worker_once(server: PrefectServer, env: dict[str, str], timeout: float = 240.0) -> str:
    """Execute the due runs of the pool and exit (`--run-once` avoids the worker that ignores SIGTERM)."""
    proc = server.cli(
        "worker", "start", "--pool", WORK_POOL, "--run-once", extra_env=env, timeout=timeout, check=False
    )
    return proc.stdout + proc.stderr


def flow_run(server: PrefectServer, run_id: str) -> dict:
    return server.api("GET", f"/flow_runs/{run_id}")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> PrefectServer:
    deploy(prefect_server)
    return prefect_server


def test_prefect_yaml_matches_serve_deployments() -> None:
    """prefect.yaml (workers) and flows/deployments.py (kimidocs serve) describe the same deployments."""
    from flows.fanout import SHARD_DEPLOYMENT, SHARD_FLOW

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == {NIGHTLY, ADHOC, SHARD_DEPLOYMENT}
    fan_out = by_name[SHARD_DEPLOYMENT]
    assert fan_out["entrypoint"] == "flows/fanout.py:analyze_shard"
    assert fan_out["work_pool"]["name"] == WORK_POOL and not fan_out.get("schedules")
    nightly, adhoc = by_name[NIGHTLY], by_name[ADHOC]
    assert nightly["schedules"] == [{"cron": NIGHTLY_CRON, "timezone": TIMEZONE, "active": True}]
    assert not adhoc.get("schedules")
    assert nightly["parameters"]["folder"] == INBOX
    for dep in (nightly, adhoc):
        assert dep["entrypoint"] == "flows/analyze.py:analyze_folder"
        assert dep["work_pool"]["name"] == WORK_POOL
        for param in (
            "profile",
            "model",
            "db",
            "include",
            "exclude",
            "max_cost_usd",
            "dry_run",
            "pack",
            "fail_on_document_errors",
            "questions",
            "fan_out",
        ):
            assert param in dep["parameters"], param
    assert spec["build"] == [{"flows.steps.locate_checkout": {"id": "checkout"}}]
    assert spec["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.directory }}"}}
    ]

    from flows.deployments import build_deployments

    served = {d.name: d for d in build_deployments()}
    assert set(served) == {NIGHTLY, ADHOC, SHARD_DEPLOYMENT}
    assert served[SHARD_DEPLOYMENT].flow_name == SHARD_FLOW
    assert [s.schedule.cron for s in served[NIGHTLY].schedules] == [NIGHTLY_CRON]
    assert [s.schedule.timezone for s in served[NIGHTLY].schedules] == [TIMEZONE]
    assert not served[ADHOC].schedules
    assert served[NIGHTLY].parameters["folder"] == INBOX
    assert served[NIGHTLY].parameters["mode"] == nightly["parameters"]["mode"] == "batch"
    assert served[NIGHTLY].parameters["batch_wait_s"] == nightly["parameters"]["batch_wait_s"] == 600
    assert adhoc["parameters"]["mode"] == "interactive"


def test_deploy_with_a_wrong_home_fails_at_deploy_time(deployed: PrefectServer, tmp_path: Path) -> None:
    done = deployed.cli(
        "deploy", "--all", extra_env={"KIMIDOCS_HOME": str(tmp_path / "nope")}, timeout=120, check=False
    )
    assert done.returncode != 0
    assert (
        "KIMIDOCS_HOME" in done.stdout + done.stderr
        and "is not a kimidocs checkout" in done.stdout + done.stderr
    )
    nightly = deployed.api("GET", f"/deployments/name/{FLOW_NAME}/{NIGHTLY}")
    pull = nightly["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]  # type: ignore[index]
    assert Path(pull["directory"]) == REPO  # the deployments registered before are untouched


def test_deploy_registers_nightly_with_cron_and_adhoc(deployed: PrefectServer) -> None:
    nightly = deployed.api("GET", f"/deployments/name/{FLOW_NAME}/{NIGHTLY}")
    adhoc = deployed.api("GET", f"/deployments/name/{FLOW_NAME}/{ADHOC}")
    assert isinstance(nightly, dict) and isinstance(adhoc, dict)
    crons = [
        (s["schedule"].get("cron"), s["schedule"].get("timezone"), s["active"]) for s in nightly["schedules"]
    ]
    assert crons == [(NIGHTLY_CRON, TIMEZONE, True)]
    assert adhoc["schedules"] == []
    assert nightly["work_pool_name"] == WORK_POOL == adhoc["work_pool_name"]
    assert nightly["parameters"]["folder"] == INBOX
    # The pull step carries the checkout resolved at deploy time, not the template.
    pull = nightly["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert Path(pull["directory"]) == REPO


def copy_corpus(corpus: Path, dest: Path, names: tuple[str, ...] = CORPUS_PICKS) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(corpus / name, dest / Path(name).name)
    return dest


@dataclass
class Batch:
    """Several ad hoc runs triggered together, executed by ONE `worker --run-once` (one start-up)."""

    server: PrefectServer
    emulator: EmulatorProcess
    tmp: Path
    runs: dict[str, str]
    worker_output: str

    def state(self, case: str) -> dict:
        return flow_run(self.server, self.runs[case])["state"]


@pytest.fixture(scope="module")
def batch(deployed: PrefectServer, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    from kimidocs.emulator import EmulatorConfig, start_emulator_process

    tmp = tmp_path_factory.mktemp("adhoc")
    emulator = start_emulator_process(
        EmulatorConfig(log_file=str(tmp / "emulator.jsonl")), workdir=tmp / "emu", env=clean_env()
    )
    try:
        folder = copy_corpus(corpus, tmp / "in")
        adhoc = f"{FLOW_NAME}/{ADHOC}"
        runs = {
            "ok": trigger(deployed, adhoc, folder=str(folder), db=str(tmp / "ok.duckdb")),
            "missing": trigger(deployed, adhoc, folder=str(tmp / "nope"), db=str(tmp / "missing.duckdb")),
            # A worker whose environment lacks the key (job variables override the worker's env).
            "nokey": trigger(
                deployed,
                adhoc,
                folder=str(folder),
                db=str(tmp / "nokey.duckdb"),
                job_env={"KIMI_API_KEY": "", "KIMI_BASE_URL": "https://api.moonshot.ai/v1"},
            ),
            # A wrong key: the first 401 stops the run (concurrency 1, so exactly one request is refused).
            "wrongkey": trigger(
                deployed,
                adhoc,
                folder=str(folder),
                db=str(tmp / "wrongkey.duckdb"),
                concurrency="1",
                job_env={"KIMI_API_KEY": "sk-wrong"},
            ),
        }
        bad = copy_corpus(corpus, tmp / "bad", ("pdf/minimal-document.pdf", "bad/empty.pdf"))
        runs["baddocs"] = trigger(deployed, adhoc, folder=str(bad), db=str(tmp / "bad.duckdb"))
        # One 500 on minimal-document.pdf's call: the retry warning must reach that run's logs.
        emulator.fail_next("500", 1, match="Stet clita kasd gubergren")
        accepted = copy_corpus(corpus, tmp / "bad-accepted", ("pdf/crazyones.pdf", "bad/empty.pdf"))
        runs["baddocs-accepted"] = trigger(
            deployed,
            adhoc,
            folder=str(accepted),
            db=str(tmp / "bad-accepted.duckdb"),
            fail_on_document_errors="false",
        )
        output = run_worker_once(deployed, emulator.worker_env())
        yield Batch(deployed, emulator, tmp, runs, output)
    finally:
        emulator.stop()


def test_worker_runs_adhoc_end_to_end(batch: Batch) -> None:
    run_id = batch.runs["ok"]
    state = batch.state("ok")
    assert state["type"] == "COMPLETED", (state, batch.worker_output[-4000:])

    # Task runs are named after the file they analyse.
    tasks = batch.server.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    names = sorted(t["name"] for t in tasks)  # type: ignore[union-attr]
    assert names == sorted(f"analyze {Path(n).name}" for n in CORPUS_PICKS)

    # The run report is a markdown artifact of this flow run.
    arts = batch.server.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    reports = [a for a in arts if a["key"] == "kimidocs-run-report"]  # type: ignore[union-attr]
    assert len(reports) == 1 and reports[0]["type"] == "markdown"
    assert "crazyones.pdf" in reports[0]["data"]

    # Logs of the run went through get_run_logger to the API.
    logs = batch.server.api(
        "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    )
    messages = " ".join(entry["message"] for entry in logs)  # type: ignore[union-attr]
    assert "backend=emulator" in messages and "crazyones.pdf" in messages
    # Progress inside a document task (issue 13.2): pages extracted and the plan, in the run's logs.
    assert "multi_page.pdf: 5/5 pages extracted" in messages and "multi_page.pdf: planned single" in messages

    with duckdb.connect(str(batch.tmp / "ok.duckdb"), read_only=True) as con:
        docs = con.execute("select count(*) from documents").fetchone()[0]
        summaries = con.execute("select count(*) from summaries").fetchone()[0]
        calls = con.execute("select count(*), count(distinct backend), min(backend) from calls").fetchone()
        runs = con.execute("select status, flow_run_id from runs").fetchall()
    assert docs == len(CORPUS_PICKS)
    assert summaries == len(CORPUS_PICKS)
    assert calls[0] >= summaries and calls[1:] == (1, "emulator")
    assert runs == [("completed", run_id)]
    # The calls reached the emulator process the worker was pointed at.
    answered = [e for e in batch.emulator.requests("/chat/completions") if e["status"] == 200]
    assert len(answered) >= calls[0]


def _task_states(batch: Batch, case: str) -> dict[str, dict]:
    tasks = batch.server.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [batch.runs[case]]}}})
    return {t["name"]: t["state"] for t in tasks}  # type: ignore[union-attr]


def test_a_failed_document_fails_its_task_and_the_run(batch: Batch) -> None:
    """Read back through the Prefect API: what `--watch` and the UI show agrees with the CLI's exit 1."""
    state = batch.state("baddocs")
    assert state["type"] == "FAILED", (state, batch.worker_output[-4000:])
    assert "1 of 2 documents failed: empty.pdf (" in state["message"]
    tasks = _task_states(batch, "baddocs")
    assert tasks["analyze minimal-document.pdf"]["type"] == "COMPLETED"
    failed = tasks["analyze empty.pdf"]
    assert failed["type"] == "FAILED" and "DocumentFailed" in failed["message"]
    assert "empty.pdf: EmptyDocument" in failed["message"]
    with duckdb.connect(str(batch.tmp / "bad.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from summaries").fetchone() == (1,)
        assert con.execute("select error_type from failures").fetchall() == [("EmptyDocument",)]
        assert con.execute("select status from runs").fetchall() == [("completed",)]


def test_kimidocs_log_lines_reach_the_flow_run_logs(batch: Batch) -> None:
    """The client's retry warning (logger kimidocs.kimi, in a pipeline thread) is in the run's logs."""
    logs = batch.server.api(
        "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [batch.runs["baddocs"]]}}, "limit": 200}
    )
    by_logger = {(entry["name"], entry["message"]) for entry in logs}  # type: ignore[union-attr]
    retries = [m for name, m in by_logger if name == "kimidocs.kimi" and "attempt 1 failed" in m]
    assert retries and "500" in retries[0], sorted(by_logger)[:40]
    assert any("empty.pdf" in m and "EmptyDocument" in m for _name, m in by_logger)
    statuses = [e["status"] for e in batch.emulator.requests("/chat/completions")]
    assert 500 in statuses


def test_expected_failures_leave_the_run_completed(batch: Batch) -> None:
    state = batch.state("baddocs-accepted")
    assert state["type"] == "COMPLETED", state
    tasks = _task_states(batch, "baddocs-accepted")
    assert tasks["analyze empty.pdf"]["type"] == "FAILED"  # the document still shows red


def test_missing_folder_fails_the_run_with_a_clear_message(batch: Batch) -> None:
    state = batch.state("missing")
    assert state["type"] == "FAILED"
    assert "folder does not exist" in state["message"] and str(batch.tmp / "nope") in state["message"]


def test_worker_without_key_fails_fast_naming_the_variable(batch: Batch) -> None:
    state = batch.state("nokey")
    assert state["type"] == "FAILED"
    assert "KIMI_API_KEY" in state["message"] and "KIMIDOCS_ALLOW_EMULATOR" in state["message"]
    assert not (batch.tmp / "nokey.duckdb").exists()  # the guard runs before the store is opened


def test_wrong_key_stops_the_run_at_the_first_401(batch: Batch) -> None:
    state = batch.state("wrongkey")
    assert state["type"] == "FAILED" and "run stopped" in state["message"]
    refused = [e for e in batch.emulator.requests("/chat/completions") if e["status"] == 401]
    assert len(refused) == 1
    with duckdb.connect(str(batch.tmp / "wrongkey.duckdb"), read_only=True) as con:
        status = con.execute("select status from runs").fetchall()
        summaries = con.execute("select count(*) from summaries").fetchone()[0]
        reasons = con.execute("select error_type from failures").fetchall()
    assert status == [("stopped",)]
    assert summaries == 0
    assert ("RunAborted",) in reasons
    assert "sk-wrong" not in state["message"]


def test_serve_setup_only_creates_limits_and_zombie_automation(deployed: PrefectServer) -> None:
    proc = subprocess.run(
        [str(BIN / "kimidocs"), "serve", "--setup-only"],
        cwd=REPO,
        env=deployed.env({"KIMIDOCS_TIER": "tier2"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {gcl["name"]: gcl for gcl in deployed.api("POST", "/v2/concurrency_limits/filter", {})}
    assert {"kimi-concurrency", "kimi-rpm", "kimi-tpm"} <= set(names)
    autos = deployed.api("POST", "/automations/filter", {})
    zombie = [a for a in autos if a["name"] == "kimidocs-crash-zombie-flow-runs"]  # type: ignore[union-attr]
    assert len(zombie) == 1
    assert zombie[0]["actions"][0]["type"] == "change-flow-run-state"
    assert zombie[0]["actions"][0]["state"] == "CRASHED"
    # Idempotent: a second setup creates nothing new.
    again = subprocess.run(
        [str(BIN / "kimidocs"), "serve", "--setup-only"],
        cwd=REPO,
        env=deployed.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "created" not in again.stdout
    autos = deployed.api("POST", "/automations/filter", {})
    assert sum(a["name"] == "kimidocs-crash-zombie-flow-runs" for a in autos) == 1  # type: ignore[union-attr]
