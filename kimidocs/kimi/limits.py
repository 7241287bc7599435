"""Client-side rate limiting for one Kimi account: concurrency, RPM, TPM and TPD.

Moonshot limits the organisation, not the key, and charges TPM on prompt + `max_tokens` at admission
(kimi-api.md §8); a 429 storm costs time and, at low tiers, the whole day. So every call asks a
`Limiter` first. `RateLimiter` is the in-process one (threads of one worker); a Prefect-backed
implementation in `flows/` can wrap Prefect's global concurrency / rate limits behind the same
`Limiter` protocol, so several workers share one account.

When the server still answers 429, the client calls `penalize(retry_after, kind)`: new acquisitions
pause until then, and a concurrency 429 (someone else uses the account too) halves the effective
concurrency, which then grows back by one slot every `recover_s` (AIMD).

Time is injected (`Clock`), so the arithmetic is tested without sleeping. `time_scale` shrinks the
durations the limiter owns (the minute and day windows, pauses, recovery, the longest wait) the way the
emulator's `time_scale` shrinks its own, so benchmarks and tests run an RPM-bound tier in seconds. Two
things stay real seconds: a server's Retry-After, and `window_margin_s`, which covers the delay between
our admission and the server's time stamp (network, parsing), a delay no clock setting shortens.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from kimidocs.kimi.errors import LimitUnreachable, RateLimited

__all__ = [
    "TIERS",
    "Clock",
    "Limiter",
    "LimiterState",
    "Permit",
    "RateLimiter",
    "RateLimits",
    "SystemClock",
]

MINUTE = 60.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """An account's limits. None means unlimited."""

    concurrency: int
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None

    @classmethod
    def for_tier(cls, name: str) -> RateLimits:
        """Limits of a published tier ("tier0".."tier5", case and spaces ignored)."""
        key = name.lower().replace(" ", "").replace("_", "")
        try:
            return TIERS[key]
        except KeyError:
            raise ValueError(f"unknown tier {name!r}; known: {', '.join(TIERS)}") from None


#: Published limits, international and China alike (kimi-api.md §8, early 2026). Check the console:
#: accounts have been seen with other numbers; pass explicit `RateLimits(...)` then.
TIERS: dict[str, RateLimits] = {
    "tier0": RateLimits(concurrency=1, rpm=3, tpm=500_000, tpd=1_500_000),
    "tier1": RateLimits(concurrency=50, rpm=200, tpm=2_000_000),
    "tier2": RateLimits(concurrency=100, rpm=500, tpm=3_000_000),
    "tier3": RateLimits(concurrency=200, rpm=5_000, tpm=3_000_000),
    "tier4": RateLimits(concurrency=400, rpm=5_000, tpm=4_000_000),
    "tier5": RateLimits(concurrency=1_000, rpm=10_000, tpm=5_000_000),
}


class Permit(Protocol):
    """What `acquire` yields: lets the caller correct the tokens charged once usage is known."""

    def settle(self, tokens: int) -> None: ...


class Limiter(Protocol):
    """The interface the Kimi client needs; `RateLimiter` here, a Prefect-backed one in flows/."""

    def acquire(self, tokens: int) -> AbstractContextManager[Permit]: ...

    def penalize(self, retry_after: float | None, kind: str | None = None) -> None: ...


class Clock(Protocol):
    """Monotonic time and a way to wait on a condition; fake it in tests."""

    def now(self) -> float: ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None: ...


class SystemClock:
    """Real time."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        cond.wait(timeout)


@dataclass(frozen=True, slots=True)
class LimiterState:
    """A snapshot for logs and tests."""

    in_flight: int
    effective_concurrency: int
    requests_last_minute: int
    tokens_last_minute: int
    tokens_last_day: int
    paused_for_s: float


class _Entry:
    """One admitted request in the sliding windows; `tokens` can be settled later."""

    __slots__ = ("at", "tokens", "windows")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens
        self.windows: list[_Window] = []


class _Window:
    """Entries of the last `span` seconds with a running token total (O(1) per check, not O(entries))."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.entries: deque[_Entry] = deque()
        self.tokens = 0

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self.tokens += entry.tokens
        entry.windows.append(self)

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0].at <= now - self.span:
            gone = self.entries.popleft()
            self.tokens -= gone.tokens
            gone.windows.remove(self)

    def wait_for(self, tokens: int, limit: int, now: float) -> float:
        """Seconds until the oldest entries leave and `tokens` more fit under `limit`."""
        excess = self.tokens + tokens - limit
        if excess <= 0:
            return 0.0
        for entry in self.entries:
            excess -= entry.tokens
            if excess <= 0:
                return max(entry.at + self.span - now, 0.0)
        return math.inf  # only when tokens > limit, which _check_reachable refuses first


class _Permit:
    def __init__(self, limiter: RateLimiter, entry: _Entry) -> None:
        self._limiter = limiter
        self._entry = entry

    def settle(self, tokens: int) -> None:
        """Replace the estimate with what the server counted (prompt_tokens + max_tokens)."""
        with self._limiter._cond:
            new = max(int(tokens), 0)
            for window in self._entry.windows:
                window.tokens += new - self._entry.tokens
            self._entry.tokens = new
            self._limiter._cond.notify_all()


class RateLimiter:
    """Thread-safe limiter for one account. `acquire(tokens)` blocks until every limit admits the call.

    `tokens` is what TPM charges: the prompt estimate plus `max_tokens`. A wait longer than `max_wait_s`
    (e.g. a spent TPD budget) raises `RateLimited` with `retry_after` instead of blocking for hours.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Clock | None = None,
        max_wait_s: float = 900.0,
        recover_s: float = 10.0,
        default_pause_s: float = 1.0,
        window_margin_s: float = 1.0,
        time_scale: float = 1.0,
    ) -> None:
        if limits.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.limits = limits
        self.time_scale = time_scale
        self.max_wait_s = max_wait_s * time_scale
        self.recover_s = recover_s * time_scale
        self.default_pause_s = default_pause_s * time_scale
        self._clock = clock or SystemClock()
        self._cond = threading.Condition()
        self._in_flight = 0
        # The server stamps a request a little after we admit it, so our windows last a little longer
        # than its own: at the edge of a window we wait a moment instead of drawing a 429.
        self._minute = _Window(MINUTE * time_scale + window_margin_s)
        self._day = _Window(DAY * time_scale + window_margin_s)
        self._paused_until = -math.inf
        self._reduced_to: int | None = None
        self._reduced_at = 0.0

    @classmethod
    def for_tier(cls, name: str, **kw: float) -> RateLimiter:
        return cls(RateLimits.for_tier(name), **kw)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"RateLimiter({self.limits!r})"

    # --- public --------------------------------------------------------------------------------------

    @contextmanager
    def acquire(self, tokens: int) -> Iterator[Permit]:
        """Hold one slot for the duration of the `with` block (a whole stream included)."""
        entry = self._admit(max(int(tokens), 0))
        try:
            yield _Permit(self, entry)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def try_acquire(self, tokens: int) -> Permit | float:
        """Admit without blocking: a permit (release with `release`) or the seconds to wait (inf: a slot)."""
        self._check_reachable(max(int(tokens), 0))
        with self._cond:
            wait = self._wait_needed(max(int(tokens), 0), self._clock.now())
            if wait > 0:
                return wait
            return _Permit(self, self._record(max(int(tokens), 0)))

    def release(self, permit: Permit) -> None:
        """Give back a slot taken with `try_acquire`."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def penalize(self, retry_after: float | None, kind: str | None = None) -> None:
        """The server said 429 anyway: pause new acquisitions; shrink concurrency on a concurrency 429."""
        with self._cond:
            now = self._clock.now()
            pause = retry_after if retry_after is not None else self.default_pause_s
            self._paused_until = max(self._paused_until, now + pause)
            if kind == "concurrency":
                current = self._effective_concurrency(now)
                # Multiplicative decrease from what was really in flight when the server objected.
                self._reduced_to = max(1, min(current, self._in_flight + 1) // 2)
                self._reduced_at = now + pause
            self._cond.notify_all()

    def state(self) -> LimiterState:
        with self._cond:
            now = self._clock.now()
            self._expire(now)
            return LimiterState(
                in_flight=self._in_flight,
                effective_concurrency=self._effective_concurrency(now),
                requests_last_minute=len(self._minute.entries),
                tokens_last_minute=self._minute.tokens,
                tokens_last_day=self._day.tokens,
                paused_for_s=max(self._paused_until - now, 0.0),
            )

    # --- internals (call with the lock held) ---------------------------------------------------------

    def _admit(self, tokens: int) -> _Entry:
        self._check_reachable(tokens)
        with self._cond:
            while True:
                now = self._clock.now()
                wait = self._wait_needed(tokens, now)
                if wait <= 0:
                    return self._record(tokens)
                if math.isfinite(wait) and wait > self.max_wait_s:
                    raise RateLimited(
                        status=None,
                        type="local_limit",
                        kind=self._binding_kind(tokens, now),
                        message=f"the local limiter would wait {wait:.0f}s (max {self.max_wait_s:g}s)",
                        retry_after=wait,
                    )
                self._clock.wait(self._cond, wait if math.isfinite(wait) else None)

    def _check_reachable(self, tokens: int) -> None:
        for name, limit in (("TPM", self.limits.tpm), ("TPD", self.limits.tpd)):
            if limit is not None and tokens > limit:
                raise LimitUnreachable(tokens, name, limit)

    def _record(self, tokens: int) -> _Entry:
        entry = _Entry(self._clock.now(), tokens)
        self._minute.add(entry)
        if self.limits.tpd is not None:
            self._day.add(entry)
        self._in_flight += 1
        return entry

    def _expire(self, now: float) -> None:
        self._minute.expire(now)
        self._day.expire(now)

    def _effective_concurrency(self, now: float) -> int:
        if self._reduced_to is None:
            return self.limits.concurrency
        regained = max(int((now - self._reduced_at) // self.recover_s), 0) if self.recover_s > 0 else 10**9
        effective = self._reduced_to + regained
        if effective >= self.limits.concurrency:
            self._reduced_to = None
            return self.limits.concurrency
        return effective

    def _next_regain(self, now: float) -> float:
        """When the reduced concurrency grows by one slot again (inf when it is not reduced)."""
        if self._reduced_to is None or self.recover_s <= 0:
            return math.inf
        steps = max(math.floor((now - self._reduced_at) / self.recover_s), 0) + 1
        return self._reduced_at + steps * self.recover_s

    def _waits(self, tokens: int, now: float) -> dict[str, float]:
        """Seconds each limit needs before admitting `tokens` (0 = admits now, inf = until a release)."""
        self._expire(now)
        limits = self.limits
        waits = {"pause": max(self._paused_until - now, 0.0)}
        if self._in_flight >= self._effective_concurrency(now):
            waits["concurrency"] = self._next_regain(now) - now  # or earlier, when a slot is released
        recent = self._minute.entries
        if limits.rpm is not None and len(recent) >= limits.rpm:
            waits["rpm"] = recent[len(recent) - limits.rpm].at + self._minute.span - now
        if limits.tpm is not None:
            waits["tpm"] = self._minute.wait_for(tokens, limits.tpm, now)
        if limits.tpd is not None:
            waits["tpd"] = self._day.wait_for(tokens, limits.tpd, now)
        return waits

    def _wait_needed(self, tokens: int, now: float) -> float:
        return max(self._waits(tokens, now).values())

    def _binding_kind(self, tokens: int, now: float) -> str:
        waits = self._waits(tokens, now)
        kind = max(waits, key=lambda k: waits[k])
        return "unknown" if kind == "pause" else kind
