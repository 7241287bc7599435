"""Scale-out (issue 15): documents per minute with 1, 2 and 3 workers sharing one Tier1 account, one lake.

    .venv/bin/python bench/scale_out.py [--workers 1,2,3] [--docs 300] [--latency-ms 3000] [--out r.json]

Everything real, started here on 127.0.0.1 and stopped by PID: PostgreSQL (Prefect's database and
the DuckLake catalog), `prefect server start` on it, a Redis server (the shared Kimi limiter,
KIMIDOCS_LIMITS_URL), the emulator in its own process as a Tier1 account in real time (50 concurrent,
200 RPM, 2M TPM; 429 beyond) whose calls take `--latency-ms`, and N `prefect worker start` processes
(`--limit 2` each: the run and a batch, or two batches), each with its own PREFECT_HOME. For each N: a
fresh lake and fresh documents (distinct small PDF/DOCX, so nothing is reused), one
`prefect deployment run analyze-folder/adhoc --param fan_out=2N`, timed from the trigger to the run's end.

Reported per N: documents per minute (whole run), the calls per minute the account saw in the run's busy
part (from the emulator's log: between its 10th and its last-but-10th answer) as a share of 200, 429s,
and CPU: the workers' process trees (extraction, Prefect, limiter and store clients) and the servers'
(Prefect + PostgreSQL, Redis), per document. `--store file` runs the same with one DuckDB file shared by the
workers' processes (possible on one machine only), to separate the lake's cost. The limiter's own cost per
call and the store's commit latency and conflicts are measured in isolation by bench/shared_limits.py and
bench/lake.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

RPM = 200


def measure(n: int, args: argparse.Namespace, servers: dict[str, Any], root: Path) -> dict[str, Any]:
    from lake_fixture import new_lake
    from scale_helpers import make_documents, start_worker, stop_workers, wait_for
    from shared_limits import tree_cpu
    from test_prefect_deployments import trigger

    from flows.deployments import ADHOC, FLOW_NAME
    from kimidocs.emulator import EmulatorConfig, start_emulator_process
    from kimidocs.store import Store

    work = root / f"workers-{n}-{args.store}"
    lake = new_lake(servers["pg"], work)
    db = lake.db if args.store == "lake" else str(work / "kimidocs.duckdb")
    folder = work / "in"
    make_documents(folder, args.docs)
    emulator = start_emulator_process(
        EmulatorConfig(tier="tier1", latency_ms=args.latency_ms, log_file=str(work / "emulator.jsonl")),
        workdir=work / "emulator",
        env=servers["clean_env"](),
    )
    env = {
        **emulator.worker_env(),
        "KIMIDOCS_LAKE_DATA_PATH": lake.data_path,
        "KIMIDOCS_TIER": "tier1",
        "KIMIDOCS_LIMITS_URL": servers["redis"].url(db=n),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(work / "results"),
    }
    prefect = servers["prefect"]
    workers = [start_worker(prefect, f"machine-{i}", work / f"machine-{i}", env, limit=2) for i in range(n)]
    server_pids = [prefect.process.pid, servers["pg"].process.pid, servers["redis"].process.pid]
    try:
        time.sleep(3)  # workers registered and polling
        cpu_servers0 = sum(tree_cpu(p) for p in server_pids)
        started = time.monotonic()
        run_id = trigger(prefect, f"{FLOW_NAME}/{ADHOC}", folder=str(folder), db=db,
                         fan_out=str(2 * n), pack="false", concurrency=str(args.concurrency))  # fmt: skip
        state = wait_for(
            lambda: (
                (s := prefect.api("GET", f"/flow_runs/{run_id}")["state"])["type"]  # type: ignore[index]
                in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                and s
            ),
            3600,
            "the run to end",
            every_s=1.0,
        )
        wall = time.monotonic() - started
        cpu_workers = sum(tree_cpu(w.process.pid) for w in workers)
        cpu_servers = sum(tree_cpu(p) for p in server_pids) - cpu_servers0
    finally:
        stop_workers(workers)
    answered = sorted(e["time"] for e in emulator.requests("/chat/completions") if e["status"] == 200)
    refused = sum(1 for e in emulator.requests("/chat/completions") if e["status"] == 429)
    emulator.stop()
    busy = answered[10:-10]
    rpm = (len(busy) - 1) * 60 / (busy[-1] - busy[0]) if len(busy) > 2 else 0.0
    with Store(db, read_only=True) as store:
        ok = store.query("SELECT count(*) FROM summaries").rows[0][0]
    return {
        "workers": n,
        "store": args.store,
        "state": state["type"],
        "documents": args.docs,
        "summaries": ok,
        "wall_s": round(wall, 1),
        "docs_per_min": round(args.docs * 60 / wall, 1),
        "busy_rpm": round(rpm, 1),
        "share_of_rpm": round(rpm / RPM, 3),
        "calls_429": refused,
        "worker_cpu_s_per_doc": round(cpu_workers / args.docs, 3),
        "server_cpu_s_per_doc": round(cpu_servers / args.docs, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--latency-ms", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4, help="documents in flight per batch run")
    parser.add_argument(
        "--store",
        choices=("lake", "file"),
        default="lake",
        help="file: one DuckDB file shared by the workers' processes (one machine only), to compare",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from postgres_fixture import start_postgres, stop_postgres
    from prefect_fixture import clean_env, start_prefect_server, stop_process
    from redis_fixture import start_redis
    from test_prefect_deployments import deploy

    results = []
    with tempfile.TemporaryDirectory(prefix="kimidocs-bench-scale-out-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # as root the server runs as `nobody`, who must traverse it
        pg = start_postgres(root / "pg")
        redis = start_redis(root / "redis")
        url = pg.url(pg.create_database("prefect"), driver="postgresql+asyncpg")
        prefect = start_prefect_server(root / "prefect-home", database_url=url)
        servers = {"pg": pg, "redis": redis, "prefect": prefect, "clean_env": clean_env}
        try:
            deploy(prefect)
            for n in (int(w) for w in args.workers.split(",")):
                row = measure(n, args, servers, root)
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            stop_process(prefect.process)
            stop_process(redis.process)
            stop_postgres(pg)
            subprocess.run(["sync"], check=False)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
