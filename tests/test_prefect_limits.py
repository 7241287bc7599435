"""Kimi limits shared through Prefect global concurrency limits: sizing, creation, two processes."""

from __future__ import annotations

import contextlib

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_fixture import PrefectServer

from flows.limits import (
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
        assert limiter_for_run("tier1") is None


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
