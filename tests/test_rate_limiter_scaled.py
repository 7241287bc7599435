"""`RateLimiter(time_scale=...)`: the limiter's minute shrinks like the emulator's, server waits stay real."""

from __future__ import annotations

import threading

import pytest

from kimidocs.kimi.limits import RateLimiter, RateLimits


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def now(self) -> float:
        return self.t

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None
        self.t += timeout


def test_scaled_minute_real_margin():
    clock = FakeClock()
    lim = RateLimiter(RateLimits(concurrency=1, rpm=3), clock=clock, time_scale=0.01, window_margin_s=0.05)
    start = clock.t
    for _ in range(4):
        with lim.acquire(0):
            pass
    # the 4th request waits one scaled minute (60 * 0.01 s) plus the margin, which stays real seconds
    assert clock.t - start == pytest.approx(0.65)


def test_server_retry_after_is_real_seconds_and_pauses_are_scaled():
    clock = FakeClock()
    lim = RateLimiter(RateLimits(concurrency=4), clock=clock, time_scale=0.1, default_pause_s=1.0)
    lim.penalize(0.25)  # the emulator's Retry-After is already in real seconds
    assert lim.state().paused_for_s == pytest.approx(0.25)
    clock.t += 1.0
    lim.penalize(None)  # no Retry-After: the default pause, scaled
    assert lim.state().paused_for_s == pytest.approx(0.1)


def test_time_scale_must_be_positive():
    with pytest.raises(ValueError, match="time_scale"):
        RateLimiter(RateLimits(concurrency=1), time_scale=0)
