"""The one retry layer for Kimi calls (tenacity), driven by the list in `errors.RETRYABLE_ERRORS`.

Waits: the server's `Retry-After` (or "try again after N seconds" in its message) when given, plus a
little jitter so threads told the same number do not return in lockstep; otherwise capped exponential
backoff with full jitter. A requested wait longer than `max_wait_s` (a spent daily budget) is not slept
through: the error is raised at once, carrying `retry_after`, so the run can stop and say when to resume.

Prefect task retries must stay at 0 for tasks that call Kimi: retries here would otherwise stack.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from kimidocs.kimi.errors import KimiError

__all__ = ["OnRetry", "RetryPolicy", "call_with_retries"]

log = logging.getLogger("kimidocs.kimi")

T = TypeVar("T")
#: Called before each backoff sleep: (attempt that failed, its error, seconds about to be slept).
OnRetry = Callable[[int, KimiError, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Tests pass a recording `sleep` (no real waiting) or tiny `base_s` / `cap_s`."""

    max_retries: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    max_wait_s: float = 300.0
    retry_after_jitter: float = 0.1  # fraction of Retry-After added at random, at most
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, error: BaseException) -> bool:
        """Retryable by the table, and the server did not ask for a wait longer than we accept."""
        if not isinstance(error, KimiError) or not error.retryable:
            return False
        wait = error.retry_after_s
        return wait is None or wait <= self.max_wait_s

    def wait_s(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        asked = error.retry_after_s if isinstance(error, KimiError) else None
        if asked is not None:
            return asked + self.rng.uniform(0, asked * self.retry_after_jitter)
        # Full jitter (uniform in [0, capped exponential]): spreads a burst of failed threads apart.
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


def call_with_retries(
    fn: Callable[[int], T],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    describe: str = "kimi call",
) -> tuple[T, int]:
    """Run `fn(attempt_number)` until it succeeds or fails for good; return (result, attempts).

    The error raised at the end is the last `KimiError`, with `.attempts` set.
    """

    def _before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if isinstance(error, KimiError):
            log.warning(
                "%s: attempt %d failed (%s); retrying in %.1fs", describe, state.attempt_number, error, wait
            )
            if on_retry is not None:
                on_retry(state.attempt_number, error, wait)

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=lambda state: policy.wait_s(
            state.attempt_number, state.outcome.exception() if state.outcome else None
        ),
        retry=retry_if_exception(policy.should_retry),
        sleep=policy.sleep,
        before_sleep=_before_sleep,
        reraise=True,
    )
    attempt_number = 0
    try:
        for attempt in retrying:
            with attempt:
                attempt_number = attempt.retry_state.attempt_number
                result = fn(attempt_number)
    except KimiError as error:
        error.attempts = attempt_number
        raise
    return result, attempt_number
