"""Shared Kimi limits across worker processes: Prefect global limits (server on PostgreSQL) vs Redis.

    .venv/bin/python bench/shared_limits.py [--workers 1,2,3] [--threads 8] [--seconds 75]
                                            [--kinds prefect,redis] [--out results.json]

What it measures, per limiter kind and number of worker processes:

rate     Tier1 (50 concurrent, 200 RPM, 2M TPM) in real time. Each worker process runs `--threads` threads
         that loop `with limiter.acquire(2_000): sleep(--latency)` (a stand-in for a Kimi call) for
         `--seconds`. Every admission's wall-clock time is recorded. Reported: requests admitted in the
         second minute of the run (seconds 61-121: the first minute's burst has left every window, so this
         is the sustained rate) as a share of 200, and the most admissions in any sliding 60 s window (must
         never exceed 200).
cost     limits far above what the loop reaches (nothing waits for a window), one worker, 4 threads,
         no sleep: the limiter's own latency per call (p50/p95 of acquire+release) and the CPU it costs this
         process and the server (Prefect's or Redis's) per call.

The servers are real: PostgreSQL and Redis (Valkey) from the wheels in .venv, started here on 127.0.0.1
with throwaway dirs (via the test fixtures' starters), and `prefect server start` on that PostgreSQL.
(BENCHMARKS.md's numbers were taken with Debian's PostgreSQL 15 and redis-server 7.0.) The machine has
2 cores: workers, the server and the database compete for them, which is part of what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _unbounded():  # type: ignore[no-untyped-def]
    from kimidocs.kimi.limits import RateLimits

    return RateLimits(concurrency=1_000, rpm=1_000_000, tpm=400_000_000)  # int32 in Prefect's table


UNBOUNDED = _unbounded()
TIERS_RPM = {"tier0": 3, "tier1": 200, "tier2": 500}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def tree_cpu(pid: int) -> float:
    """CPU of a process and all its live descendants (a server's workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending += [int(c) for c in children]
    return total


# --- the worker process ----------------------------------------------------------------------------------


def make_limiter(kind: str, tier: str, url: str):  # type: ignore[no-untyped-def]
    from kimidocs.kimi.limits import RateLimits

    limits = UNBOUNDED if tier == "unbounded" else RateLimits.for_tier(tier)
    if kind == "redis":
        from kimidocs.kimi.redis_limits import RedisLimiter

        return RedisLimiter(limits, url, namespace=f"bench-{os.environ['BENCH_RUN']}")
    if kind == "prefect":
        from flows.prefect_limits import PrefectLimiter, ensure_limits

        ensure_limits(limits)
        return PrefectLimiter(limits)
    from kimidocs.kimi.limits import RateLimiter

    return RateLimiter(limits)


def worker_main(args: argparse.Namespace) -> None:
    """One worker process: threads looping over acquire -> sleep; prints admission times as JSON."""
    for attempt in range(10):  # a busy Prefect server answers 503 now and then (its DB timeout)
        try:
            limiter = make_limiter(args.kind, args.tier, args.url)
            break
        except Exception:
            if attempt == 9:
                raise
            time.sleep(1.0)
    start_at = float(os.environ["BENCH_START_AT"])
    stop_at = start_at + args.seconds
    admitted: list[float] = []
    costs: list[float] = []
    guard = threading.Lock()
    time.sleep(max(0.0, start_at - time.time()))

    def loop() -> None:
        while time.time() < stop_at:
            began = time.perf_counter()
            with limiter.acquire(args.tokens):
                got = time.time()
                if args.latency > 0:
                    time.sleep(args.latency)
            spent = time.perf_counter() - began - args.latency
            with guard:
                admitted.append(got)
                costs.append(spent)

    cpu0 = time.process_time()
    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"admitted": admitted, "costs": costs, "cpu": time.process_time() - cpu0}))


# --- the driver ----------------------------------------------------------------------------------------


def start_servers(root: Path) -> dict:
    from postgres_fixture import start_postgres
    from prefect_fixture import start_prefect_server
    from redis_fixture import start_redis

    pg = start_postgres(root / "pg")
    redis = start_redis(root / "redis")
    url = pg.url(pg.create_database("prefect"), driver="postgresql+asyncpg")
    server = start_prefect_server(root / "prefect-home", timeout_s=120, database_url=url)
    return {"pg": pg, "redis": redis, "prefect": server.process, "api": server.api_url, "home": server.home}


def stop_servers(servers: dict) -> None:
    from postgres_fixture import stop_postgres
    from prefect_fixture import stop_process

    stop_process(servers["prefect"])
    stop_process(servers["redis"].process)
    stop_postgres(servers["pg"])


def reset_prefect_limits(servers: dict) -> None:
    """Delete our global limits so each measurement starts with full buckets, as a fresh account would."""
    import urllib.request

    for name in ("kimi-concurrency", "kimi-rpm", "kimi-tpm"):
        req = urllib.request.Request(f"{servers['api']}/v2/concurrency_limits/{name}", method="DELETE")
        with contextlib.suppress(Exception):  # absent already
            urllib.request.urlopen(req, timeout=10).close()


def measure(servers: dict, kind: str, workers: int, args: argparse.Namespace, *, tier: str, latency: float,
            seconds: float, threads: int) -> dict:  # fmt: skip
    from prefect_fixture import clean_env

    if kind == "prefect":
        reset_prefect_limits(servers)
    run = f"{kind}-{workers}-{tier}-{time.time_ns()}"
    env = clean_env(
        {
            "PREFECT_HOME": str(servers["home"]),
            "PREFECT_API_URL": servers["api"],
            "BENCH_RUN": run,
            "BENCH_START_AT": str(time.time() + 15.0),  # every worker imported and connected by then
            "PYTHONPATH": str(REPO),
        }
    )
    server_pid = servers["prefect"].pid if kind == "prefect" else servers["redis"].process.pid
    server_cpu0 = tree_cpu(server_pid) + (tree_cpu(servers["pg"].process.pid) if kind == "prefect" else 0)
    cmd = [sys.executable, __file__, "--worker", "--kind", kind, "--tier", tier, "--url",
           servers["redis"].url(), "--threads", str(threads), "--seconds", str(seconds), "--latency",
           str(latency)]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    server_cpu = tree_cpu(server_pid) + (tree_cpu(servers["pg"].process.pid) if kind == "prefect" else 0)
    server_cpu -= server_cpu0
    admitted = sorted(t for o in outs for t in o["admitted"])
    costs = sorted(c for o in outs for c in o["costs"])
    start = float(env["BENCH_START_AT"])
    steady_from = start + args.warmup if seconds < 121 else start + 61
    steady_to = min(steady_from + 60, start + seconds)
    steady = [t for t in admitted if steady_from <= t < steady_to]
    span = steady_to - steady_from
    worst, j = 0, 0
    for i, t in enumerate(admitted):  # most admissions in any 60 s window
        while admitted[j] <= t - 60:
            j += 1
        worst = max(worst, i - j + 1)
    return {
        "kind": kind,
        "workers": workers,
        "tier": tier,
        "calls": len(admitted),
        "steady_rpm": round(len(steady) * 60 / span, 1),
        "share_of_rpm": round(len(steady) * 60 / span / TIERS_RPM.get(tier, 0), 3)
        if tier in TIERS_RPM
        else None,
        "max_in_60s": worst,
        "limiter_p50_ms": round(1000 * statistics.median(costs), 2) if costs else None,
        "limiter_p95_ms": round(1000 * costs[int(0.95 * (len(costs) - 1))], 2) if costs else None,
        "client_cpu_ms_per_call": round(1000 * sum(o["cpu"] for o in outs) / max(len(admitted), 1), 3),
        "server_cpu_ms_per_call": round(1000 * server_cpu / max(len(admitted), 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="redis")
    parser.add_argument("--kinds", default="prefect,redis")
    parser.add_argument("--tier", default="tier1")
    parser.add_argument("--url", default="")
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=125.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--tokens", type=int, default=2_000)
    parser.add_argument("--cost-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="kimidocs-bench-limits-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # as root PostgreSQL runs as `nobody`, who must traverse it
        servers = start_servers(root)
        try:
            for kind in args.kinds.split(","):
                row = measure(servers, kind, 1, args, tier="unbounded", latency=0.0,
                              seconds=args.cost_seconds, threads=4)  # fmt: skip
                row["what"] = "cost"
                print(json.dumps(row), flush=True)
                results.append(row)
                for workers in (int(w) for w in args.workers.split(",")):
                    row = measure(servers, kind, workers, args, tier=args.tier, latency=args.latency,
                                  seconds=args.seconds, threads=args.threads)  # fmt: skip
                    row["what"] = "rate"
                    print(json.dumps(row), flush=True)
                    results.append(row)
        finally:
            stop_servers(servers)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
