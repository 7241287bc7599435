"""When to hold calls back so a shared prefix is cached first (DESIGN §3 Call), from the numbers.

Calls that start together all miss the provider's prefix cache; calls that start after one of them has
finished read the shared prefix at the hit price. Holding the others back costs one call's wait, so it
is worth it only when it saves enough:

    saving = (shared prefix tokens in whole cache blocks - what is already cached)
             x (miss price - hit price) x (calls - 1)
    first call alone  <=>  saving >= Settings.wait_min_saving_usd

Two places ask (`decide`): a run (its first call warms the system prompt for every call of the run,
so the rest of the folder fans out after it) and a prefix group inside one document (the map calls of a
long document, several tasks over one document). A group that shares only a system prompt the run has
already warmed saves nothing and starts together; several tasks over a large shared document go one
first. Each decision is kept (`Scheduler.decisions`) for the run report.

`RunWarmup` is the run's gate: the first call of the run passes, the others wait until it returns.
Pure but for that gate (a lock and an event).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kimidocs.core import tokens
from kimidocs.core.costs import CACHE_BLOCK_TOKENS  # whole blocks of 256 tokens (kimi-api.md §2a)
from kimidocs.core.models import ModelInfo

#: Default of `Settings.wait_min_saving_usd`. A warm system prompt (~2 blocks) re-read by 4 more calls
#: saves 512 x $0.50/M x 4 = $0.001 at kimi-k2.5 prices, 20 small documents ~$0.005, a 100k-token
#: document shared by a second task $0.05; 2 map calls of a long book sharing only the system prompt
#: $0.0003, less than the minute one map call takes.
DEFAULT_MIN_SAVING_USD = 0.001


def whole_blocks(tokens: int, block: int = CACHE_BLOCK_TOKENS) -> int:
    """The tokens of a prefix the cache can hold: whole blocks only (a partial last block misses)."""
    return max(tokens, 0) // block * block


def system_tokens(system: str) -> int:
    """Our count of a system message as a prompt prefix: its text and its role markers."""
    return tokens.count(system) + tokens.MESSAGE_OVERHEAD


@dataclass(frozen=True, slots=True)
class WaitDecision:
    """Whether a group's first call goes alone, and the numbers it was decided from."""

    group: str
    calls: int
    shared_tokens: int  # cacheable (whole blocks) prefix tokens the calls share
    cached_tokens: int  # of those, known to be in the cache already
    saving_usd: float
    threshold_usd: float
    first_alone: bool

    def describe(self) -> str:
        verb = "first call alone" if self.first_alone else "all start together"
        cmp = ">=" if self.first_alone else "<"
        return (
            f"{self.group}: {verb} ({self.calls} calls share {self.shared_tokens:,} cacheable prefix tokens, "
            f"{self.cached_tokens:,} already cached; saving ${self.saving_usd:.5f} {cmp} "
            f"${self.threshold_usd:.5f})"
        )


def decide(
    group: str,
    calls: int,
    shared_tokens: int,
    cached_tokens: int,
    model: ModelInfo,
    threshold_usd: float = DEFAULT_MIN_SAVING_USD,
    block: int = CACHE_BLOCK_TOKENS,
) -> WaitDecision:
    """Should the first of `calls` calls sharing a `shared_tokens` prefix go alone? (see module doc)."""
    cacheable = whole_blocks(shared_tokens, block)
    cached = min(whole_blocks(cached_tokens, block), cacheable)
    saving = (cacheable - cached) * (model.price_cache_miss - model.price_cache_hit) / 1e6 * max(calls - 1, 0)
    alone = calls > 1 and saving > 0 and saving >= threshold_usd
    return WaitDecision(group, calls, cacheable, cached, saving, threshold_usd, alone)


class RunWarmup:
    """A run's first call goes alone: `enter` lets the first caller through (True) and holds the others
    until `leave` (the first call returned or failed). `warm_tokens` is what that call left cached."""

    def __init__(self, first_alone: bool = True) -> None:
        self.enabled = first_alone
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._taken = not first_alone
        self.warm_tokens = 0
        if not first_alone:
            self._done.set()

    @classmethod
    def warm(cls, warm_tokens: int) -> RunWarmup:
        """A gate already passed: another process of the run made its first call (`warm_tokens` cached)."""
        gate = cls(first_alone=True)
        gate._taken = True
        gate.leave(warm_tokens)
        return gate

    def enter(self) -> bool:
        """True for the caller that must send the run's first call (and then `leave`); others wait."""
        with self._lock:
            if not self._taken:
                self._taken = True
                return True
        self._done.wait()
        return False

    def leave(self, warm_tokens: int) -> None:
        self.warm_tokens = warm_tokens
        self._done.set()

    @property
    def open(self) -> bool:
        return self._done.is_set()


@dataclass
class Scheduler:
    """A run's scheduling for the prefix cache: prices, threshold, the warm-up gate, the decisions.

    `system_tokens` is the system message's token count (with its role markers): the prefix every
    call of the run shares.
    """

    model: ModelInfo
    system_tokens: int
    threshold_usd: float = DEFAULT_MIN_SAVING_USD
    warmup: RunWarmup = field(default_factory=RunWarmup)
    decisions: list[WaitDecision] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def plan_run(self, documents: int) -> WaitDecision:
        """Decide the run's warm-up for `documents` documents (each at least one call)."""
        d = self.record(decide("run", documents, self.system_tokens, 0, self.model, self.threshold_usd))
        if not d.first_alone:
            self.warmup = RunWarmup(first_alone=False)
        return d

    @property
    def warm_tokens(self) -> int:
        """Prefix tokens cached by the time a call gets past the run's warm-up gate: the system
        prompt's when the gate is on (a call waits there until the warm-up returned, or is the
        warm-up itself), unless the warm-up call failed; 0 when the run has no warm-up."""
        gate = self.warmup
        if not gate.enabled:
            return 0
        return gate.warm_tokens if gate.open else self.system_tokens

    def group(self, name: str, calls: int, shared_tokens: int) -> WaitDecision:
        """Decide (and record) for a prefix group inside a document; what the run warmed counts as cached."""
        cached = min(self.warm_tokens, shared_tokens)
        return self.record(decide(name, calls, shared_tokens, cached, self.model, self.threshold_usd))

    def record(self, decision: WaitDecision) -> WaitDecision:
        with self._lock:
            self.decisions.append(decision)
        return decision
