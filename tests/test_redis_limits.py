"""The shared limiter on a real Redis: one account's limits hold for every process together.

Processes stand in for machines: each has its own `RedisLimiter` (its own connections, its own
in-process limiter), and only Redis is shared.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prefect_fixture import BIN, REPO, clean_env, stop_process
from redis_fixture import RedisServer

from kimidocs.kimi.errors import LimitUnreachable, RateLimited
from kimidocs.kimi.limits import RateLimits
from kimidocs.kimi.redis_limits import RedisLimiter
from kimidocs.run.settings import Settings


def _namespace(request: pytest.FixtureRequest) -> str:
    return f"t-{request.node.name}-{time.time_ns()}"


HOLDER = textwrap.dedent(
    """
    import json, sys, threading, time
    from kimidocs.kimi.limits import RateLimits
    from kimidocs.kimi.redis_limits import RedisLimiter

    url, ns, concurrency, rpm, threads, calls, hold_s = sys.argv[1:8]
    limiter = RedisLimiter(
        RateLimits(concurrency=int(concurrency), rpm=int(rpm) if rpm != "-" else None),
        url, namespace=ns, time_scale=0.05, window_margin_s=0.0,
    )
    out, guard = [], threading.Lock()

    def loop():
        for _ in range(int(calls)):
            with limiter.acquire(0):
                began = time.time()
                time.sleep(float(hold_s))
                ended = time.time()
            with guard:
                out.append((began, ended))

    workers = [threading.Thread(target=loop) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(out))
    """
)


def _run_holders(
    redis_server: RedisServer, ns: str, *, processes: int, **kw: object
) -> list[tuple[float, float]]:
    args = [str(kw[k]) for k in ("concurrency", "rpm", "threads", "calls", "hold_s")]
    env = clean_env({"PYTHONPATH": str(REPO)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, redis_server.url(), ns, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    intervals: list[tuple[float, float]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        intervals += [tuple(pair) for pair in json.loads(out)]  # type: ignore[misc]
    return intervals


def _most_overlapping(intervals: list[tuple[float, float]]) -> int:
    events = sorted(
        [(b, 1) for b, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_concurrency_holds_across_processes(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    """3 processes x 4 threads want 12 slots at once; the account has 3. Every call still runs."""
    intervals = _run_holders(
        redis_server,
        _namespace(request),
        processes=3,
        concurrency=3,
        rpm="-",
        threads=4,
        calls=4,
        hold_s=0.03,
    )
    assert len(intervals) == 3 * 4 * 4
    assert _most_overlapping(intervals) <= 3


def test_rpm_window_holds_across_processes(redis_server: RedisServer, request: pytest.FixtureRequest) -> None:
    """rpm=4 with a scaled 3 s minute: no window sees more than 4 starts, from 3 processes. A start is
    stamped when `acquire` returned, after Redis stamped it, by a lag that a loaded machine can stretch to
    tens of ms for one thread and not another: windows are checked 1 s short (2 s of the 3). A shared
    window gives at most 4 starts in any of them; 3 processes each with a window of its own would start
    12 at once, caught on any machine."""
    intervals = _run_holders(
        redis_server, _namespace(request), processes=3, concurrency=50, rpm=4, threads=2, calls=2, hold_s=0
    )
    starts = sorted(b for b, _ in intervals)
    assert len(starts) == 12
    for i, t in enumerate(starts):
        in_window = [s for s in starts[i:] if s < t + 2.0]
        assert len(in_window) <= 4, f"{len(in_window)} starts within 2 s from {t}"


def _hold_forever(url: str, ns: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    limiter = RedisLimiter(RateLimits(concurrency=1), url, namespace=ns, lease_s=1.0)
    with limiter.acquire(0):
        ready.set()
        time.sleep(3600)


def test_a_killed_workers_slot_comes_back_after_its_lease(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    ns = _namespace(request)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(redis_server.url(), ns, ready))
    holder.start()
    try:
        assert ready.wait(60)
        # held (and renewed) while the holder lives: a short wait does not get it
        impatient = RedisLimiter(RateLimits(concurrency=1), redis_server.url(), namespace=ns, max_wait_s=0.3)
        with pytest.raises(RateLimited, match="concurrency"), impatient.acquire(0):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        patient = RedisLimiter(RateLimits(concurrency=1), redis_server.url(), namespace=ns, max_wait_s=60)
        with patient.acquire(0):
            pass  # the dead holder's lease ran out: the slot is free again
    finally:
        if holder.is_alive():
            holder.kill()


def test_a_request_bigger_than_tpm_is_refused_at_once(redis_server: RedisServer) -> None:
    limiter = RedisLimiter(RateLimits(concurrency=1, tpm=100_000), redis_server.url(), namespace="big")
    with pytest.raises(LimitUnreachable), limiter.acquire(150_000):
        pass


def test_the_url_password_is_never_shown() -> None:
    limiter = RedisLimiter(RateLimits(concurrency=1), "redis://:s3cret-pw@127.0.0.1:1/0", namespace="x")
    assert "s3cret-pw" not in repr(limiter)
    with pytest.raises(ConnectionError) as caught:
        limiter.ping()
    assert "s3cret-pw" not in str(caught.value)
    settings = Settings(_env_file=None, KIMIDOCS_LIMITS_URL="redis://:s3cret-pw@127.0.0.1:1/0")
    assert "s3cret-pw" not in repr(settings)


def test_limits_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="KIMIDOCS_LIMITS_URL"):
        Settings(_env_file=None, KIMIDOCS_LIMITS_URL="postgresql://127.0.0.1/x")


# --- three `kimidocs analyze` processes, one account -------------------------------------------------------

DOCS_PER_RUN = 4


def _analyze_three(emulator_env: dict[str, str], tmp_path: Path, extra: dict[str, str]) -> None:
    runs = []
    for n in range(3):
        folder = tmp_path / f"in-{n}"
        folder.mkdir(parents=True)
        for i in range(DOCS_PER_RUN):
            (folder / f"memo-{n}-{i}.txt").write_text(
                f"Memo {n}.{i}\n\nPayment of {100 + i} EUR due 2024-03-0{i + 1}."
            )
        env = clean_env(
            {**emulator_env, "KIMIDOCS_TIER": "tier0", "KIMIDOCS_LIMITS_TIME_SCALE": "0.02", **extra}
        )
        cmd = [
            str(BIN / "kimidocs"),
            "analyze",
            str(folder),
            "--db",
            str(tmp_path / f"k{n}.duckdb"),
            "--no-pack",
        ]
        runs.append(subprocess.Popen([*cmd, "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True))  # fmt: skip
    try:
        for run in runs:
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, out[-2000:] + err[-2000:]
    finally:
        for run in runs:
            stop_process(run)


def test_three_runs_share_tier0_without_a_429(
    emulator_process, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Tier0 (1 concurrent, 3 RPM) at a 50x faster clock: three processes each limited on their own
    draw 429s from the emulator; the same three sharing Redis draw none."""
    emulator = emulator_process(tier="tier0", time_scale=0.02, latency_ms=150)
    _analyze_three(emulator.worker_env(), tmp_path / "alone", {})
    alone = [e for e in emulator.requests("/chat/completions") if e["status"] == 429]
    assert alone, "without a shared limiter three processes should overrun tier0 (the control)"

    emulator.reset()
    url = redis_server.url(db=1)
    _analyze_three(emulator.worker_env(), tmp_path / "shared", {"KIMIDOCS_LIMITS_URL": url})
    answered = emulator.requests("/chat/completions")
    assert [e["status"] for e in answered].count(200) == 3 * DOCS_PER_RUN
    assert [e for e in answered if e["status"] == 429] == []
