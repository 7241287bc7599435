"""Issue 11.2: the flow's document tasks open what they need from the run id, so they run in any
process. A flow run against the session Prefect server with `ProcessPoolTaskRunner`: every document is
done by a task in a process other than the flow's, and stored in the flow's database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from prefect_fixture import REPO

FLOW = """
import json, os, sys
from prefect.task_runners import ProcessPoolTaskRunner
from flows.analyze import analyze_folder

flow = analyze_folder.with_options(task_runner=ProcessPoolTaskRunner(max_workers=2))
state = flow(folder=sys.argv[1], db=sys.argv[2], pack=False, concurrency=2, return_state=True)
run = str(state.state_details.flow_run_id)
print(json.dumps({"result": state.result(), "pid": os.getpid(), "flow_run_id": run}))
"""

FILES = ("pdf/minimal-document.pdf", "pdf/crazyones.pdf", "docx/lorem_ipsum.docx")


def _rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.prefect_server
def test_document_tasks_run_in_other_processes(
    tmp_path: Path, corpus: Path, make_emulator, prefect_server
) -> None:
    emulator = make_emulator()
    folder, db = tmp_path / "in", tmp_path / "k.duckdb"
    folder.mkdir()
    for name in FILES:
        shutil.copy(corpus / name, folder / Path(name).name)
    # The flow in a process of its own, configured by its environment alone (as a worker starts it): the
    # pool's processes and the flow's forwarding threads then all talk to the session server.
    env = prefect_server.env(
        {
            "KIMI_API_KEY": emulator.api_key,
            "KIMI_BASE_URL": emulator.base_url,
            "KIMIDOCS_SHARED_LIMITS": "0",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", FLOW, str(folder), str(db)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result, flow_pid, flow_run_id = out["result"], out["pid"], out["flow_run_id"]
    assert result["ok"] == len(FILES) and result["failed"] == 0, result

    # Every document's summary and call rows, written by the tasks, in the flow's run.
    docs = dict(_rows(db, "SELECT doc_id, regexp_extract(path, '[^/]+$') FROM documents"))
    assert sorted(docs.values()) == sorted(Path(n).name for n in FILES)
    assert _rows(db, "SELECT count(DISTINCT doc_id) FROM summaries") == [(len(FILES),)]
    run_id = result["run_id"]
    assert _rows(db, "SELECT status FROM runs") == [("completed",)]
    called = _rows(db, f"SELECT DISTINCT doc_id FROM calls WHERE run_id = '{run_id}' AND status = 'ok'")
    assert {d for (d,) in called} == set(docs)
    assert len([e for e in emulator.requests("/chat/completions") if e["status"] == 200]) == len(FILES)

    # Read back through the Prefect API: one task run per document, each in a process not the flow's.
    expected = {f"analyze {Path(n).name}": "COMPLETED" for n in FILES}
    names: dict[str, str] = {}
    pids: set[int] = set()
    deadline = time.monotonic() + 60  # task runs and logs of other processes reach the server by events
    while time.monotonic() < deadline and (names != expected or len(pids) < 1):
        time.sleep(0.5)
        tasks = prefect_server.api(
            "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}
        )
        names = {t["name"]: t["state"]["type"] for t in tasks}  # type: ignore[union-attr]
        logs = prefect_server.api(
            "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        )
        pids = {
            int(m.group(1))
            for entry in logs  # type: ignore[union-attr]
            if entry["task_run_id"] and (m := re.search(r"in process (\d+)$", entry["message"]))
        }
    assert names == expected
    assert pids and flow_pid not in pids, (pids, flow_pid)
