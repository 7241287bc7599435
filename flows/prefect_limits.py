"""One Kimi account's limits shared by every worker, through Prefect global concurrency limits.

(Not `flows/limits.py`: Prefect puts the entrypoint's folder on sys.path, where that name would shadow the
`limits` library that kimidocs/kimi/redis_limits.py uses.)

Moonshot limits the organisation, not the process: two workers with an in-process `RateLimiter`
each would together send twice the account's concurrency and RPM. When a Prefect server is
configured (`PREFECT_API_URL`), every Kimi call therefore also takes

- a slot of `kimi-concurrency` (a plain limit, held for the whole request, stream included),
- a slot of `kimi-rpm` (a rate limit: slots decay, so it spaces request *starts*),
- `tokens` slots of `kimi-tpm` (a rate limit sized in tokens: prompt estimate + `max_tokens`).

Prefect's rate limits are token buckets (a burst of `limit`, then `slot_decay_per_second`), the
account's are sliding one-minute windows. A bucket never exceeds a window when
`limit + 60 * decay <= per_minute`, so `kimi-rpm` gets a burst of a tenth of the RPM and refills
at the rest, and `kimi-tpm` a burst of a quarter of the TPM (at least one full-window request).

The limits must exist or Prefect limits nothing ("... do not exist - skipping acquisition"), so
`ensure_limits` creates missing ones (idempotent; existing ones are left as an operator tuned them)
and acquisition is `strict`: a deleted limit fails the call instead of silently not limiting.

The in-process `RateLimiter` still runs inside: it keeps TPD and the 429 back-off (`penalize`), which
Prefect has no notion of.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings

from kimidocs.kimi.limits import Permit, RateLimiter, RateLimits
from kimidocs.run.settings import Settings

CONCURRENCY = "kimi-concurrency"
RPM = "kimi-rpm"
TPM = "kimi-tpm"

#: The smallest TPM burst: one request near a 256k window plus its output must fit in the bucket.
MIN_TPM_BURST = 300_000


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One Prefect global concurrency limit as we want it created."""

    name: str
    limit: int
    slot_decay_per_second: float = 0.0


def prefect_server_configured() -> bool:
    """True when this process talks to a Prefect server (not the ephemeral per-process one)."""
    return bool(get_current_settings().api.url)


def specs_for(limits: RateLimits) -> list[LimitSpec]:
    """The Prefect limits that keep every worker together under `limits` (see the module docstring)."""
    specs = [LimitSpec(CONCURRENCY, limits.concurrency)]
    if limits.rpm is not None:
        burst = max(1, limits.rpm // 10)
        specs.append(LimitSpec(RPM, burst, (limits.rpm - burst) / 60.0))
    if limits.tpm is not None:
        burst = min(limits.tpm, max(limits.tpm // 4, MIN_TPM_BURST))
        specs.append(LimitSpec(TPM, burst, (limits.tpm - burst) / 60.0))
    return specs


def ensure_limits(limits: RateLimits) -> list[str]:
    """Create the missing limits for `limits`; returns the names created (empty when all existed).

    Existing limits are not changed: an operator may have resized them (`prefect gcl update`) for an
    account whose numbers differ from its published tier. Two workers racing here is harmless: the
    loser gets `ObjectAlreadyExists`.
    """
    created: list[str] = []
    with get_client(sync_client=True) as client:
        for spec in specs_for(limits):
            try:
                client.read_global_concurrency_limit_by_name(spec.name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=spec.name, limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second
                    )
                )
                created.append(spec.name)
            except ObjectAlreadyExists:
                pass
    return created


def existing_limits() -> dict[str, LimitSpec]:
    """Our limits as the server has them now (for logs and tests)."""
    found: dict[str, LimitSpec] = {}
    with get_client(sync_client=True) as client:
        for name in (CONCURRENCY, RPM, TPM):
            try:
                gcl = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                continue
            found[name] = LimitSpec(name, gcl.limit, gcl.slot_decay_per_second or 0.0)
    return found


class PrefectLimiter:
    """`kimidocs.kimi.limits.Limiter` backed by Prefect global limits, shared by every worker.

    `acquire` first takes the in-process limiter (cheap, and it honours 429 pauses), then holds an
    account-wide concurrency slot around the request, and takes the account-wide rate slots last.
    """

    def __init__(self, limits: RateLimits, *, local: RateLimiter | None = None) -> None:
        self.limits = limits
        self.local = local or RateLimiter(limits)
        present = existing_limits()
        self._rate_names = [n for n in (RPM, TPM) if n in present]
        self._has_concurrency = CONCURRENCY in present
        self._tpm_burst = present[TPM].limit if TPM in present else 0

    @classmethod
    def for_tier(cls, tier: str) -> PrefectLimiter:
        """Create the tier's limits if missing, then limit against whatever the server has."""
        limits = RateLimits.for_tier(tier)
        ensure_limits(limits)
        return cls(limits)

    def __repr__(self) -> str:
        return f"PrefectLimiter({self.limits!r}, shared={[*self._rate_names, CONCURRENCY]})"

    @contextmanager
    def acquire(self, tokens: int) -> Iterator[Permit]:
        with self.local.acquire(tokens) as permit, self._concurrency_slot():
            # Rate slots last, right before the request goes out: taken before a slow concurrency
            # acquisition, several of them would bunch up behind it and arrive together.
            if RPM in self._rate_names:
                rate_limit(RPM, occupy=1, strict=True)
            if TPM in self._rate_names and tokens > 0:
                # A request bigger than the bucket takes the whole bucket (it could never fit otherwise).
                rate_limit(TPM, occupy=max(1, min(math.ceil(tokens), self._tpm_burst)), strict=True)
            yield permit

    def _concurrency_slot(self) -> AbstractContextManager[None]:
        if not self._has_concurrency:
            return nullcontext()
        return concurrency(CONCURRENCY, occupy=1, strict=True, raise_on_lease_renewal_failure=False)

    def penalize(self, retry_after: float | None, kind: str | None = None) -> None:
        self.local.penalize(retry_after, kind)


def limiter_for_run(settings: Settings) -> PrefectLimiter | None:
    """Prefect's shared limits when a Prefect server is configured and no better shared limiter is,
    else None (the pipeline's own applies: Redis when KIMIDOCS_LIMITS_URL is set, else in-process).

    KIMIDOCS_SHARED_LIMITS=0 turns Prefect's off (one worker per account does not need it, and each call
    then saves three round trips to the Prefect API). KIMIDOCS_LIMITS_URL (Redis) replaces it: the same
    account-wide limits at well under a millisecond per call (BENCHMARKS.md, "Shared Kimi limits").
    """
    if settings.limits_url is not None or not settings.shared_limits:
        return None
    if not prefect_server_configured():
        return None
    return PrefectLimiter.for_tier(settings.tier)
