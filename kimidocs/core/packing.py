"""Several small documents in one request, when requests per minute (not tokens) bind. Pure.

At Tier0 (3 RPM, 500k TPM; kimi-api.md §8) a lone call for a one-page document spends a whole request on
a few thousand tokens: a minute of lone calls uses ~4% of the TPM and the run crawls at 3 documents a
minute. A pack of k documents (`requests.pack_request`: per-document `<document id>` sections, an
answer keyed by document) does the work of k requests in one. At Tier1 and above a minute of lone calls
already uses a large share of the TPM, so packing buys little throughput and costs a retry whenever
one part of a pack is unusable: it is off there unless asked for.

    packing_pays(limits, charge)      rpm x (prompt + max_tokens of a lone call) << tpm
    PackBuilder.add / flush           greedy groups in arrival order, within the window and the caps
    pack_output_tokens(n, ...)        max_tokens of a pack of n (per-document allowance, capped)
    split_usage(usage, weights)       a pack's billed tokens shared out per document (sums exactly)

Which documents may be packed is the pipeline's call (single-call text documents, no page images);
this module only sizes and groups them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from kimidocs.core.models import ModelInfo
from kimidocs.core.planning import Budget
from kimidocs.core.records import Usage

T = TypeVar("T")


class AccountLimits(Protocol):
    """The account's request and token rates (`kimi.limits.RateLimits`), as packing reads them."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...


__all__ = [
    "DEFAULT_POLICY",
    "PackBuilder",
    "PackPolicy",
    "is_small",
    "max_docs_per_pack",
    "pack_content_limit",
    "pack_output_tokens",
    "packing_pays",
    "plan_packs",
    "split_usage",
]


@dataclass(frozen=True, slots=True)
class PackPolicy:
    """Caps of a pack. Small caps on purpose: a model reads a handful of short documents as well as one;
    dozens in one prompt blur together, and one bad answer sends them all back to be read alone."""

    max_docs: int = 8
    max_doc_tokens: int = 4_000  # a document above this (rendered pages) is analysed alone
    max_pack_tokens: int = 24_000  # rendered document text of one pack
    output_tokens_per_doc: int = 1_024  # max_tokens allowance per document in the pack
    rpm_share: float = 0.25  # packing pays when a minute of lone calls charges at most this share of TPM


DEFAULT_POLICY = PackPolicy()


def packing_pays(limits: AccountLimits | None, lone_charge: int, policy: PackPolicy = DEFAULT_POLICY) -> bool:
    """True when RPM binds long before TPM for lone calls that each charge `lone_charge` tokens.

    `lone_charge` is what TPM counts for one small document alone: prompt + max_tokens. Unlimited RPM
    (or no limits known) never packs; unlimited TPM with an RPM always does.
    """
    if limits is None or limits.rpm is None:
        return False
    if limits.tpm is None:
        return True
    return limits.rpm * max(lone_charge, 1) <= policy.rpm_share * limits.tpm


def max_docs_per_pack(model: ModelInfo, policy: PackPolicy = DEFAULT_POLICY) -> int:
    """Documents per pack: the policy's cap, and no more than the model's output allows."""
    return max(1, min(policy.max_docs, model.max_output // max(policy.output_tokens_per_doc, 1)))


def pack_output_tokens(
    n_docs: int, budget: Budget, model: ModelInfo, policy: PackPolicy = DEFAULT_POLICY
) -> int:
    """max_tokens of a pack of `n_docs`: the per-document allowance, never below a lone call's output
    and never above the model's maximum."""
    return min(model.max_output, max(budget.max_output_tokens, n_docs * policy.output_tokens_per_doc))


def pack_content_limit(
    n_docs: int, budget: Budget, model: ModelInfo, policy: PackPolicy = DEFAULT_POLICY
) -> int:
    """Rendered document tokens a pack of `n_docs` may carry: the policy cap, and what the window leaves
    once the pack's larger output is reserved (the budget reserved only a lone call's output)."""
    extra_output = max(pack_output_tokens(n_docs, budget, model, policy) - budget.max_output_tokens, 0)
    return min(policy.max_pack_tokens, budget.chunk_tokens - extra_output)


def is_small(tokens: int, budget: Budget, policy: PackPolicy = DEFAULT_POLICY) -> bool:
    """A document small enough to share a request (and to leave room for at least one more)."""
    return tokens <= min(policy.max_doc_tokens, budget.chunk_tokens // 2)


class PackBuilder(Generic[T]):
    """Groups items greedily in the order they arrive; thread-safe (pipeline workers add as they finish).

    `add` returns a group the moment it is full (by documents or tokens) so it can be sent at once;
    `flush` returns what is left. A group of one is still returned: the caller sends it alone.
    """

    def __init__(
        self,
        size: Callable[[T], int],
        budget: Budget,
        model: ModelInfo,
        policy: PackPolicy = DEFAULT_POLICY,
    ) -> None:
        self._size = size
        self._budget = budget
        self._model = model
        self._policy = policy
        self._max_docs = max_docs_per_pack(model, policy)
        self._lock = threading.Lock()
        self._group: list[T] = []
        self._tokens = 0

    def add(self, item: T) -> tuple[T, ...] | None:
        """Add `item`; returns a group to send now (the previous one, or this one when full), else None."""
        n = self._size(item)
        with self._lock:
            ready: tuple[T, ...] | None = None
            limit = pack_content_limit(len(self._group) + 1, self._budget, self._model, self._policy)
            if self._group and self._tokens + n > limit:
                ready = self._take()
            self._group.append(item)
            self._tokens += n
            if ready is None and len(self._group) >= self._max_docs:
                ready = self._take()
            return ready

    def flush(self) -> tuple[T, ...]:
        """The last, partial group (possibly empty)."""
        with self._lock:
            return self._take()

    def _take(self) -> tuple[T, ...]:
        group, self._group, self._tokens = tuple(self._group), [], 0
        return group


def plan_packs(
    sizes: Sequence[int], budget: Budget, model: ModelInfo, policy: PackPolicy = DEFAULT_POLICY
) -> list[tuple[int, ...]]:
    """Groups of indexes into `sizes` (rendered tokens per document), as `PackBuilder` forms them."""
    builder: PackBuilder[int] = PackBuilder(lambda i: sizes[i], budget, model, policy)
    groups = [g for i in range(len(sizes)) if (g := builder.add(i))]
    last = builder.flush()
    return [*groups, last] if last else groups


def split_usage(usage: Usage, weights: Sequence[int]) -> list[Usage]:
    """`usage` shared out in proportion to `weights` (largest remainder): the parts sum to the whole."""
    if not weights:
        return []

    def share(total: int) -> list[int]:
        w = [max(int(x), 0) for x in weights]
        if sum(w) == 0:
            w = [1] * len(w)
        exact = [total * x / sum(w) for x in w]
        parts = [int(e) for e in exact]
        order = sorted(range(len(w)), key=lambda i: (parts[i] - exact[i], i))
        for i in order[: total - sum(parts)]:
            parts[i] += 1
        return parts

    prompt = share(usage.prompt_tokens)
    cached = [min(c, p) for c, p in zip(share(usage.cached_tokens), prompt, strict=True)]
    output = share(usage.completion_tokens)
    return [Usage(p, c, o) for p, c, o in zip(prompt, cached, output, strict=True)]
