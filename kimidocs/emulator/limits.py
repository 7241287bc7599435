"""Account rate limits as Moonshot enforces them: concurrency, RPM, TPM (prompt + max_tokens, charged at
the start of a request), TPD. Windows slide; their length is scaled by `time_scale`.

A rejected request is not counted. The Retry-After it gets is the time until the window has room again
(1 emulated second for concurrency, where no window tells).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kimidocs.emulator.knobs import EmulatorConfig

MINUTE = 60.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: str  # concurrency | rpm | tpm | tpd
    message: str
    retry_after: float  # real seconds


def format_seconds(seconds: float, time_scale: float) -> str:
    """Whole seconds (rounded up) at real time; at a scaled clock, fractional with millisecond precision."""
    if time_scale >= 1:
        return str(max(math.ceil(seconds - 1e-9), 1))
    return f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".")


class _Window:
    """Timestamped charges inside a sliding window, with a running total."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, length: float) -> None:
        while self.items and self.items[0][0] <= now - length:
            self.total -= self.items.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.items.append((now, amount))
        self.total += amount

    def wait_for_room(self, now: float, length: float, need: int, limit: int) -> float:
        """Seconds until `total + need <= limit` as old charges leave the window."""
        excess = self.total + need - limit
        for at, amount in self.items:
            excess -= amount
            if excess <= 0:
                return max(at + length - now, 0.0)
        return length


class AccountLimits:
    """Admission control for one account. Thread-safe; `admit` then `release` once per admitted request."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._requests = _Window()  # one per admitted request (RPM)
        self._tokens = _Window()  # prompt + max_tokens (TPM)
        self._day = _Window()  # prompt + max_tokens (TPD)
        self.max_rpm_seen = 0
        self.max_tpm_seen = 0

    def reset(self) -> None:
        with self._lock:
            self._requests, self._tokens, self._day = _Window(), _Window(), _Window()
            self.max_in_flight = self.in_flight
            self.max_rpm_seen = self.max_tpm_seen = 0

    def arrive(self) -> int:
        """In-flight requests when one arrives (for the log)."""
        with self._lock:
            return self.in_flight

    def admit(self, config: EmulatorConfig, tokens: int) -> Rejection | None:
        scale = config.time_scale
        minute, day = MINUTE * scale, DAY * scale
        who = f"Your account {config.org_id}<{config.ak_id}> request reached organization"
        concurrency, rpm, tpm, tpd = (config.limit(n) for n in ("concurrency", "rpm", "tpm", "tpd"))

        def reject(kind: str, text: str, wait: float) -> Rejection:
            after = format_seconds(wait, scale)
            return Rejection(kind, f"{who} {text}, please try again after {after} seconds", wait)

        with self._lock:
            now = self._clock()
            self._requests.expire(now, minute)
            self._tokens.expire(now, minute)
            self._day.expire(now, day)
            if concurrency is not None and self.in_flight >= concurrency:
                return reject("concurrency", f"max concurrency: {concurrency}", 1.0 * scale)
            if rpm is not None and len(self._requests.items) >= rpm:
                wait = self._requests.wait_for_room(now, minute, 1, rpm)
                return reject("rpm", f"max RPM: {rpm}", wait)
            if tpm is not None and self._tokens.total + tokens > tpm:
                wait = self._tokens.wait_for_room(now, minute, tokens, tpm)
                text = f"TPM rate limit, current:{self._tokens.total + tokens}, limit:{tpm}"
                return reject("tpm", text, wait)
            if tpd is not None and self._day.total + tokens > tpd:
                wait = self._day.wait_for_room(now, day, tokens, tpd)
                return reject("tpd", f"TPD rate limit, current:{self._day.total + tokens}, limit:{tpd}", wait)
            self._requests.add(now, 1)
            self._tokens.add(now, tokens)
            self._day.add(now, tokens)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.max_rpm_seen = max(self.max_rpm_seen, len(self._requests.items))
            self.max_tpm_seen = max(self.max_tpm_seen, self._tokens.total)
            return None

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def stats(self, config: EmulatorConfig) -> dict[str, int]:
        with self._lock:
            now = self._clock()
            self._requests.expire(now, MINUTE * config.time_scale)
            self._tokens.expire(now, MINUTE * config.time_scale)
            return {
                "in_flight": self.in_flight,
                "max_concurrency": self.max_in_flight,
                "rpm_now": len(self._requests.items),
                "tpm_now": self._tokens.total,
                "max_rpm": self.max_rpm_seen,
                "max_tpm": self.max_tpm_seen,
            }
