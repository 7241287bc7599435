"""Kimi limits shared through Prefect global concurrency limits: sizing, creation, two processes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixture import REPO, PrefectServer, stop_process

from flows.prefect_limits import (
    CONCURRENCY,
    RPM,
    TPM,
    PrefectLimiter,
    ensure_limits,
    existing_limits,
    limiter_for_run,
    specs_for,
)
from kimidocs.kimi.limits import TIERS, RateLimits
from kimidocs.run.settings import Settings


def delete_our_limits() -> None:
    with get_client(sync_client=True) as client:
        for name in (CONCURRENCY, RPM, TPM):
            with contextlib.suppress(ObjectNotFound):
                client.delete_global_concurrency_limit_by_name(name)


@pytest.fixture
def clean_limits(prefect_api: PrefectServer):
    """The session server without our limits before and after the test (other tests get fresh ones)."""
    delete_our_limits()
    yield prefect_api
    delete_our_limits()


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_buckets_never_admit_more_than_a_minute_window(tier: str) -> None:
    """A bucket (burst L, refill d/s) admits at most L + 60 d in any minute: that must be <= the limit."""
    limits = TIERS[tier]
    specs = {s.name: s for s in specs_for(limits)}
    assert specs[CONCURRENCY].limit == limits.concurrency
    assert specs[CONCURRENCY].slot_decay_per_second == 0
    for name, per_minute in ((RPM, limits.rpm), (TPM, limits.tpm)):
        spec = specs[name]
        assert 1 <= spec.limit <= per_minute
        assert spec.limit + 60 * spec.slot_decay_per_second <= per_minute + 1e-6
        # ...and the sustained rate is still most of the account's (tier0 is too small for a big burst:
        # 3 RPM, and its TPM bucket must hold one full-window request).
        share = 0.4 if tier == "tier0" else 0.75
        assert 60 * spec.slot_decay_per_second >= share * per_minute - 1
    assert specs[TPM].limit >= min(limits.tpm, 300_000)  # one full-window request fits in the bucket


def test_no_server_means_no_prefect_limiter() -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert limiter_for_run(Settings(_env_file=None)) is None


def test_a_redis_limiter_replaces_prefects(prefect_api: object) -> None:
    """With KIMIDOCS_LIMITS_URL set, runs share limits through Redis: no Prefect leases per call."""
    settings = Settings(_env_file=None, KIMIDOCS_LIMITS_URL="redis://127.0.0.1:1/0")
    assert limiter_for_run(settings) is None
    assert isinstance(limiter_for_run(Settings(_env_file=None)), PrefectLimiter)
    assert limiter_for_run(Settings(_env_file=None, KIMIDOCS_SHARED_LIMITS="0")) is None


@pytest.mark.prefect_server
def test_ensure_limits_creates_once_and_keeps_operator_changes(clean_limits: PrefectServer) -> None:
    limits = RateLimits(concurrency=3, rpm=30, tpm=1_000_000)
    assert sorted(ensure_limits(limits)) == sorted([CONCURRENCY, RPM, TPM])
    assert ensure_limits(limits) == []
    have = existing_limits()
    assert have[CONCURRENCY].limit == 3
    assert have[RPM].limit == 3 and have[RPM].slot_decay_per_second == pytest.approx(27 / 60)
    # An operator resizes a limit for an account that differs from its tier: we leave it alone.
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(CONCURRENCY, GlobalConcurrencyLimitUpdate(limit=7))
    assert ensure_limits(limits) == []
    assert existing_limits()[CONCURRENCY].limit == 7
    limiter = PrefectLimiter(limits)
    with limiter.acquire(1_000) as permit:
        permit.settle(900)


@pytest.mark.prefect_server
def test_acquire_fails_loudly_when_a_limit_was_deleted(clean_limits: PrefectServer) -> None:
    """strict acquisition: a limit deleted under a running worker must not silently stop limiting."""
    limiter = PrefectLimiter.for_tier("tier1")
    delete_our_limits()
    with pytest.raises(Exception, match="kimi-"), limiter.acquire(10):
        pass


DELIVERY_SLACK_S = 1.0
TWO_PROCESS_DOCS = ("pdf/normal_4pages.pdf", "pdf/redp5110_sampled.pdf", "pdf/multi_page.pdf")
FLOW_SCRIPT = (
    "import sys, json; from flows.analyze import analyze_folder; "
    "print(json.dumps(analyze_folder(folder=sys.argv[1], db=sys.argv[2], model='kimidocs-test-8k', "
    "concurrency=4)))"
)


@pytest.mark.prefect_server
@pytest.mark.slow
def test_two_flow_runs_at_once_share_one_accounts_limits(
    clean_limits: PrefectServer, emulator_process, corpus: Path, tmp_path: Path
) -> None:
    """Two processes, each a flow run with 4 documents in parallel, against one emulated account.

    Shared limits: 2 concurrent requests; a bucket of 2 starts refilled at 1/s (at most 2 + 6 = 8 starts in
    any 6 s). The emulator enforces the same with a 6 s "minute" (time_scale 0.1), 9 requests in it (one of
    slack for network jitter) and 2 concurrent, answering 429 otherwise; its log is the evidence.
    """
    burst, decay, window_s = 2, 1.0, 6.0
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=CONCURRENCY, limit=2))
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=RPM, limit=burst, slot_decay_per_second=decay)
        )
    emulator = emulator_process(concurrency=2, rpm=9, time_scale=window_s / 60, latency_ms=300)
    procs = []
    for n in (1, 2):
        folder = tmp_path / f"in{n}"
        folder.mkdir()
        for name in TWO_PROCESS_DOCS:
            shutil.copy2(corpus / name, folder / Path(name).name)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", FLOW_SCRIPT, str(folder), str(tmp_path / f"out{n}.duckdb")],
                cwd=REPO,
                env=clean_limits.env(emulator.worker_env()),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0])
        finally:
            stop_process(proc)
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
        assert "Kimi limits shared through Prefect" in out

    chats = emulator.requests("/chat/completions")
    recorded = 0
    for n in (1, 2):
        with duckdb.connect(str(tmp_path / f"out{n}.duckdb"), read_only=True) as con:
            assert con.execute("select count(*) from summaries").fetchone()[0] == len(TWO_PROCESS_DOCS)
            recorded += con.execute("select count(*) from calls where status = 'ok'").fetchone()[0]
    assert len(chats) == recorded >= 2 * len(TWO_PROCESS_DOCS) + 8  # map calls: enough to queue on the limits
    assert {e["status"] for e in chats} == {200}, "the emulator refused requests: a limit was exceeded"
    assert max(e["concurrency_at_arrival"] for e in chats) + 1 <= 2
    assert emulator.stats()["max_concurrency"] <= 2
    starts = sorted(e["time"] for e in chats)
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            # j - i + 1 starts within (t_j - t_i) seconds: never more than the bucket allows, +1 for jitter.
            # The bucket holds for the grant times on the Prefect server; arrival times at the emulator lag
            # them by the grant's way back and the send, up to ~1 s on this loaded 2-core machine (SQLite
            # server, two flow processes, their extraction workers): grants 1 s apart can arrive together.
            # Without the shared limits both processes send 2 x 4 at once and this fails by far.
            window = starts[j] - starts[i] + DELIVERY_SLACK_S
            assert j - i + 1 <= burst + decay * window + 1, (i, j, starts[j] - starts[i])
