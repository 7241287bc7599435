"""The account limiter: concurrency, RPM, TPM (prompt + max_tokens), TPD, and 429 feedback.

Time is a fake clock whose `wait` advances it, so nothing sleeps and every number is exact. One test uses
real threads to check that the concurrency bound holds (and is reached) under contention.
"""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimidocs.kimi.errors import LimitUnreachable, RateLimited
from kimidocs.kimi.limits import TIERS, Limiter, RateLimiter, RateLimits


class FakeClock:
    """Monotonic time that only moves when the limiter waits (or the test says so)."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None, "single-threaded test would block forever"
        self.waits.append(timeout)
        self.t += timeout

    def advance(self, seconds: float) -> None:
        self.t += seconds


def limiter(**kw) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    limits = RateLimits(
        concurrency=kw.pop("concurrency", 10),
        rpm=kw.pop("rpm", None),
        tpm=kw.pop("tpm", None),
        tpd=kw.pop("tpd", None),
    )
    kw.setdefault("window_margin_s", 0.0)  # exact 60 s / 24 h windows keep the arithmetic readable
    return RateLimiter(limits, clock=clock, **kw), clock


def test_tiers_match_the_published_table():
    assert RateLimits.for_tier("tier0") == RateLimits(1, 3, 500_000, 1_500_000)
    assert RateLimits.for_tier("Tier1") == RateLimits(50, 200, 2_000_000, None)
    assert RateLimits.for_tier("tier 5") == RateLimits(1_000, 10_000, 5_000_000, None)
    assert len(TIERS) == 6
    with pytest.raises(ValueError, match="tier9"):
        RateLimits.for_tier("tier9")


def test_rate_limiter_satisfies_the_protocol():
    lim: Limiter = RateLimiter.for_tier("tier1")
    with lim.acquire(10) as permit:
        permit.settle(12)


def test_concurrency_slots():
    lim, _ = limiter(concurrency=2)
    a, b = lim.try_acquire(1), lim.try_acquire(1)
    assert not isinstance(a, float) and not isinstance(b, float)
    assert lim.try_acquire(1) == math.inf  # only a release frees a slot
    lim.release(a)
    assert not isinstance(lim.try_acquire(1), float)
    assert lim.state().in_flight == 2


def test_rpm_sliding_window():
    lim, clock = limiter(rpm=3)
    for _ in range(3):
        with lim.acquire(0):
            clock.advance(10)  # requests at t0, t0+10, t0+20
    assert lim.try_acquire(0) == pytest.approx(30.0)  # the first leaves the window at t0+60
    clock.advance(30)
    assert not isinstance(lim.try_acquire(0), float)


def test_window_margin_waits_a_little_past_the_servers_window():
    lim, _ = limiter(rpm=1, window_margin_s=2.0)
    with lim.acquire(0):
        pass
    assert lim.try_acquire(0) == pytest.approx(62.0)


def test_tpm_counts_tokens_until_old_ones_leave_the_window():
    lim, clock = limiter(tpm=1_000)
    with lim.acquire(600):
        pass
    clock.advance(5)
    with lim.acquire(300):
        pass
    # 600 + 300 + 150 > 1000: wait until the 600 leaves the window, 55 s from now
    assert lim.try_acquire(150) == pytest.approx(55.0)
    permit = lim.try_acquire(100)  # 600 + 300 + 100 fits exactly
    assert not isinstance(permit, float)
    assert lim.state().tokens_last_minute == 1_000
    clock.advance(55)
    assert lim.state().tokens_last_minute == 400


def test_settle_replaces_the_estimate():
    lim, _ = limiter(tpm=1_000)
    with lim.acquire(900) as permit:
        permit.settle(100)
    assert lim.state().tokens_last_minute == 100
    assert not isinstance(lim.try_acquire(900), float)


def test_blocking_acquire_waits_for_the_window():
    lim, clock = limiter(rpm=1)
    start = clock.t
    with lim.acquire(0):
        pass
    with lim.acquire(0):
        pass
    assert clock.t - start == pytest.approx(60.0)
    assert clock.waits == [pytest.approx(60.0)]


def test_request_larger_than_tpm_is_refused_at_once():
    lim, _ = limiter(tpm=500_000, tpd=1_500_000)
    with pytest.raises(LimitUnreachable, match="TPM"), lim.acquire(600_000):
        pass


def test_spent_daily_budget_raises_instead_of_waiting_hours():
    lim, clock = limiter(tpd=1_000, max_wait_s=900)
    with lim.acquire(800):
        pass
    clock.advance(3_600)
    with pytest.raises(RateLimited) as info, lim.acquire(500):
        pass
    error = info.value
    assert error.kind == "tpd"
    assert error.status is None  # decided locally
    assert error.retry_after == pytest.approx(86_400 - 3_600)
    assert error.fatal_for_run
    assert clock.waits == []  # never slept


def test_penalize_pauses_new_acquisitions():
    lim, clock = limiter()
    lim.penalize(30.0, "rpm")
    assert lim.try_acquire(0) == pytest.approx(30.0)
    start = clock.t
    with lim.acquire(0):
        pass
    assert clock.t - start == pytest.approx(30.0)


def test_penalize_without_wait_uses_the_default_pause():
    lim, _ = limiter(default_pause_s=2.0)
    lim.penalize(None)
    assert lim.try_acquire(0) == pytest.approx(2.0)


def test_concurrency_429_halves_then_recovers():
    lim, clock = limiter(concurrency=8, recover_s=10.0)
    held = [lim.try_acquire(0) for _ in range(5)]
    lim.release(held.pop())  # the rejected one gave its slot back: 4 in flight
    lim.penalize(1.0, "concurrency")
    assert lim.state().effective_concurrency == 2  # (4 + 1) // 2
    for permit in held:
        lim.release(permit)
    clock.advance(1.0)  # pause over, recovery starts
    assert lim.state().effective_concurrency == 2
    clock.advance(10.0)
    assert lim.state().effective_concurrency == 3
    clock.advance(60.0)
    assert lim.state().effective_concurrency == 8


def test_reduced_concurrency_wait_is_until_the_next_regained_slot():
    lim, clock = limiter(concurrency=4, recover_s=10.0)
    lim.penalize(0.0, "concurrency")  # nothing in flight: reduced to 1
    first = lim.try_acquire(0)
    assert not isinstance(first, float)
    assert lim.try_acquire(0) == pytest.approx(10.0)
    clock.advance(10.0)
    assert not isinstance(lim.try_acquire(0), float)


def test_threads_never_exceed_concurrency_and_do_run_in_parallel():
    """8 threads through concurrency 2: at most 2 inside at once, and 2 do meet inside (a barrier of 2)."""
    lim = RateLimiter(RateLimits(concurrency=2))
    inside, peak = 0, 0
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=30)

    def work() -> None:
        nonlocal inside, peak
        with lim.acquire(1):
            with lock:
                inside += 1
                peak = max(peak, inside)
            meet.wait()  # would time out if the limiter let only one thread in
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert peak == 2
    assert lim.state().in_flight == 0
    assert lim.state().requests_last_minute == 8


def test_settle_after_the_entry_left_the_window_changes_nothing():
    lim, clock = limiter(tpm=1_000, tpd=10_000)
    with lim.acquire(600) as permit:
        clock.advance(61)  # a long stream: its charge has already left the minute window
        permit.settle(100)
    state = lim.state()
    assert (state.tokens_last_minute, state.tokens_last_day) == (0, 100)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.floats(0, 40), st.integers(0, 400)), max_size=40))
def test_running_totals_match_a_brute_force_count(steps):
    """This test ensures the O(1) window totals equal a plain recount after any acquire/settle/advance."""
    lim, clock = limiter(tpd=10**9)
    history: list[list[float]] = []  # [at, tokens]
    for tokens, advance, settled in steps:
        with lim.acquire(tokens) as permit:
            history.append([clock.t, tokens])
            if settled % 2:
                permit.settle(settled)
                history[-1][1] = settled
        clock.advance(advance)
        state = lim.state()
        assert state.tokens_last_minute == sum(t for at, t in history if at > clock.t - 60)
        assert state.tokens_last_day == sum(t for at, t in history if at > clock.t - 86_400)
