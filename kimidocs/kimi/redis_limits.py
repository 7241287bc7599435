"""One Kimi account's limits shared by every worker on every machine, through Redis.

Why Redis and not Prefect's global limits (flows/prefect_limits.py): a Prefect lease costs three HTTP requests
and 55-80 ms of server CPU per call, and three workers on Prefect limits reached only a fraction of
Tier1's 200 RPM (BENCHMARKS.md, "Shared Kimi limits"). A Redis round trip costs well under a millisecond.

- RPM, TPM and TPD are the `limits` library's *moving window* (a Redis list of hit time stamps, checked
  and pushed by one Lua script): the same sliding window Moonshot enforces, exact, not a token bucket.
  Tokens are counted in units of `TOKEN_UNIT` (rounded up, so never under-counted), which keeps the
  lists short (Tier1's 2M TPM is 2,000 entries) where one entry per token would be millions.
- Concurrency is `concurrency` Redis locks (redis-py's `Lock`, a key set with NX and an expiry): a call
  holds one slot for its whole duration, stream included. A renewal thread extends held slots, so a
  worker that dies (SIGKILL, a lost machine) frees its slots within `lease_s`, never for good.
- Windows last `window_margin_s` longer than Moonshot's, as in the in-process limiter: the server stamps
  a request a little after we admit it.

Rates are checked with `test` before any is `hit`, so a call refused by TPM does not spend an RPM entry.
Between the test and the hit another worker can win the race; the hit then fails, is retried, and the
entries already pushed stay (conservative: it only ever under-uses the account).

The in-process `RateLimiter` still runs first: it keeps the 429 back-off (`penalize`) of this process.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import redis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import LockError

from kimidocs.core.passwords import redact_passwords
from kimidocs.kimi.errors import LimitUnreachable, RateLimited
from kimidocs.kimi.limits import DAY, MINUTE, Permit, RateLimiter, RateLimits

__all__ = ["TOKEN_UNIT", "RedisLimiter"]

TOKEN_UNIT = 1_000  # TPM/TPD entries are per started thousand tokens
_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.25  # a full concurrency pool is polled at most this far apart


@dataclass(frozen=True, slots=True)
class _Rate:
    kind: str
    item: RateLimitItem
    per_token: bool


class RedisLimiter:
    """`kimidocs.kimi.limits.Limiter` shared through a Redis server by every process of one account."""

    def __init__(
        self,
        limits: RateLimits,
        url: str,
        *,
        namespace: str = "kimidocs",
        local: RateLimiter | None = None,
        time_scale: float = 1.0,
        window_margin_s: float = 1.0,
        lease_s: float = 30.0,
        max_wait_s: float = 900.0,
    ) -> None:
        self.limits = limits
        self.namespace = namespace
        self.local = local or RateLimiter(limits, time_scale=time_scale, window_margin_s=window_margin_s)
        self.lease_s = lease_s
        self.max_wait_s = max_wait_s * time_scale
        self._redis = redis.Redis.from_url(url)
        self._windows = MovingWindowRateLimiter(RedisStorage(url, key_prefix=f"{namespace}:limits"))
        self._rates = self._rate_items(limits, time_scale, window_margin_s)
        self._held: dict[int, redis.lock.Lock] = {}
        self._held_guard = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._url_shown = redact_passwords(url)

    def __repr__(self) -> str:
        return f"RedisLimiter({self.limits!r}, {self._url_shown})"

    @staticmethod
    def _rate_items(limits: RateLimits, time_scale: float, margin_s: float) -> list[_Rate]:
        def seconds(span: float) -> int:
            return max(1, math.ceil(span * time_scale + margin_s))

        rates = []
        if limits.rpm is not None:
            rates.append(_Rate("rpm", RateLimitItemPerSecond(limits.rpm, seconds(MINUTE)), False))
        if limits.tpm is not None:
            rates.append(
                _Rate("tpm", RateLimitItemPerSecond(limits.tpm // TOKEN_UNIT, seconds(MINUTE)), True)
            )
        if limits.tpd is not None:
            rates.append(_Rate("tpd", RateLimitItemPerSecond(limits.tpd // TOKEN_UNIT, seconds(DAY)), True))
        return rates

    def ping(self) -> None:
        """Fail now, with the server named, when Redis cannot be reached (not at the first call)."""
        try:
            self._redis.ping()
        except redis.RedisError as err:
            raise ConnectionError(f"the shared limiter's Redis at {self._url_shown}: {err}") from None

    # --- the Limiter protocol ---------------------------------------------------------------------------

    @contextmanager
    def acquire(self, tokens: int) -> Iterator[Permit]:
        """Hold an account-wide concurrency slot for the `with` block, after the rate windows admit it."""
        tokens = max(int(tokens), 0)
        self._check_reachable(tokens)
        with self.local.acquire(tokens) as permit:
            deadline = time.monotonic() + self.max_wait_s
            slot = self._take_slot(deadline)
            try:
                self._take_rates(tokens, deadline)
                # Moonshot charges TPM on prompt + max_tokens at admission, what we charged here: the
                # permit settles only the in-process windows.
                yield permit
            finally:
                self._give_slot(slot)

    def penalize(self, retry_after: float | None, kind: str | None = None) -> None:
        self.local.penalize(retry_after, kind)

    # --- rates ----------------------------------------------------------------------------------------

    def _cost(self, rate: _Rate, tokens: int) -> int:
        return max(1, math.ceil(tokens / TOKEN_UNIT)) if rate.per_token else 1

    def _check_reachable(self, tokens: int) -> None:
        for rate in self._rates:
            if rate.per_token and self._cost(rate, tokens) > rate.item.amount:
                raise LimitUnreachable(tokens, rate.kind.upper(), rate.item.amount * TOKEN_UNIT)

    def _take_rates(self, tokens: int, deadline: float) -> None:
        pending = list(self._rates)
        while pending:
            refused = [
                r
                for r in pending
                if not self._windows.test(r.item, self.namespace, cost=self._cost(r, tokens))
            ]
            if not refused:
                for rate in list(pending):
                    if self._windows.hit(rate.item, self.namespace, cost=self._cost(rate, tokens)):
                        pending.remove(rate)
                    else:
                        refused.append(rate)
                        break
            if refused:
                self._sleep_until_free(refused[0], deadline)

    def _sleep_until_free(self, rate: _Rate, deadline: float) -> None:
        stats = self._windows.get_window_stats(rate.item, self.namespace)
        wait = min(max(stats.reset_time - time.time(), _POLL_MIN_S), 1.0) + random.uniform(0, _POLL_MIN_S)
        if time.monotonic() + wait > deadline:
            raise RateLimited(
                status=None,
                type="shared_limit",
                kind=rate.kind,
                message=f"the shared limiter would wait longer than {self.max_wait_s:g}s for {rate.kind}",
                retry_after=wait,
            )
        time.sleep(wait)

    # --- concurrency slots ----------------------------------------------------------------------------

    def _take_slot(self, deadline: float) -> int:
        pause = _POLL_MIN_S
        while True:
            start = random.randrange(self.limits.concurrency)
            for offset in range(self.limits.concurrency):
                index = (start + offset) % self.limits.concurrency
                with self._held_guard:
                    if index in self._held:
                        continue  # ours already: another thread of this process holds it
                lock = self._redis.lock(
                    f"{self.namespace}:concurrency:{index}", timeout=self.lease_s, thread_local=False
                )
                if lock.acquire(blocking=False):
                    with self._held_guard:
                        self._held[index] = lock
                        self._ensure_renewer()
                    return index
            if time.monotonic() + pause > deadline:
                raise RateLimited(
                    status=None,
                    type="shared_limit",
                    kind="concurrency",
                    message=f"no shared concurrency slot within {self.max_wait_s:g}s",
                    retry_after=pause,
                )
            time.sleep(pause + random.uniform(0, pause))
            pause = min(pause * 2, _POLL_MAX_S)

    def _give_slot(self, index: int) -> None:
        with self._held_guard:
            lock = self._held.pop(index, None)
        if lock is None:
            return
        with suppress(LockError):  # it expired (this process stalled past the lease): someone may hold it now
            lock.release()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew, name="kimi-slot-renewer", daemon=True)
            self._renewer.start()

    def _renew(self) -> None:
        """Extend every held slot's lease a third of the way through it, while any is held."""
        while True:
            time.sleep(self.lease_s / 3)
            with self._held_guard:
                held = list(self._held.values())
                if not held:
                    self._renewer = None
                    return
            for lock in held:
                with suppress(LockError):  # released meanwhile, or already expired
                    lock.reacquire()
