"""Usage -> dollars, and what a plan should cost before anything is sent. Pure.

Prices are USD per 1M tokens from the model table (kimi-api.md §2c): prompt tokens read from the
provider's prefix cache at the hit price, the rest at the miss price, output at the output price.

The estimate follows the layout the pipeline really sends (requests.py, mapreduce.py): the system
message is the same for every call, so after the first call of a document it is read from the cache
(the first map call goes alone so the others find it); tasks 2..N over one document read the system
and the document from the cache. The cache works in blocks (256 tokens observed, kimi-api.md §2a), so
only whole blocks of a prefix count as hits. Output is estimated at every call's `max_tokens`: an
upper bound, since billed output is usually shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kimidocs.core import tokens
from kimidocs.core.models import ModelInfo, NoBatchSupport
from kimidocs.core.planning import MAP_REDUCE, PRIMING_TOKENS, Plan, plan_reduce
from kimidocs.core.records import Usage
from prompts import Profile

CACHE_BLOCK_TOKENS = 256


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a plan is expected to use and cost (prompt tokens include the cached ones)."""

    calls: int
    prompt_tokens: int
    cached_tokens_expected: int
    output_tokens: int
    usd: float

    @property
    def miss_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens_expected


def call_cost(usage: Usage, model: ModelInfo) -> float:
    """Dollars billed for one call's usage."""
    return (
        usage.miss_tokens * model.price_cache_miss
        + usage.cached_tokens * model.price_cache_hit
        + usage.completion_tokens * model.price_output
    ) / 1e6


def request_estimate(prompt_tokens_est: int, max_tokens: int, model: ModelInfo) -> float:
    """What a request can cost at most before it is sent: every prompt token a miss, all of `max_tokens`
    spent (what the budget guard reserves)."""
    return (model.price_cache_miss * prompt_tokens_est + model.price_output * max_tokens) / 1e6


def batch_call_cost(usage: Usage, model: ModelInfo) -> float:
    """Dollars billed for one line of a Batch API job: each price times the model's batch factor.

    Cached tokens, when the batch reports any, are billed at the batch-discounted hit price (the pricing
    page discounts "the standard model price" as a whole); whether the prefix cache applies inside a
    batch at all is undocumented, so estimates for batches should assume no hits (`batching.py`).
    Raises `NoBatchSupport` for a model without a batch price.
    """
    if model.batch_price_factor is None:
        raise NoBatchSupport(model.id)
    return call_cost(usage, model) * model.batch_price_factor


def batch_estimate(estimate: CostEstimate, model: ModelInfo) -> CostEstimate:
    """The same plan sent through the Batch API: no cache hits counted (the prefix cache is not promised
    inside a batch), every price times the model's batch factor. Raises `NoBatchSupport`."""
    if model.batch_price_factor is None:
        raise NoBatchSupport(model.id)
    cost = usd(estimate.prompt_tokens, 0, estimate.output_tokens, model) * model.batch_price_factor
    return replace(estimate, cached_tokens_expected=0, usd=cost)


def lower_bound(doc_tokens: int, output_tokens: int, model: ModelInfo) -> float:
    """The floor for a document: each of its tokens billed once at the miss price, plus the output."""
    return (doc_tokens * model.price_cache_miss + output_tokens * model.price_output) / 1e6


def usd(prompt_tokens: int, cached_tokens: int, output_tokens: int, model: ModelInfo) -> float:
    """Dollars for token totals (prompt includes cached)."""
    return call_cost(Usage(prompt_tokens, cached_tokens, output_tokens), model)


def _cached_blocks(prefix_tokens: int) -> int:
    return prefix_tokens // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS


def estimate_plan_cost(
    plan: Plan, profile: Profile, model: ModelInfo, *, tasks: int = 1, system_cached: bool = False
) -> CostEstimate:
    """The expected calls, tokens and dollars of `plan` (see the module docstring for the cache model).

    `tasks` > 1: the tasks of a declared profile. They share the document prefix: after the first
    task, a single call reads system + document from the cache, and a map call system + its chunk.
    `system_cached`: an earlier document of the run already put the system message in the cache.
    """
    budget = plan.budget
    system = tokens.count(profile.system) + tokens.MESSAGE_OVERHEAD
    system_hit = _cached_blocks(system)
    task_tokens = {
        stage: tokens.count(profile.task(stage)) + 2 * tokens.MESSAGE_OVERHEAD + PRIMING_TOKENS
        for stage in ("task", "map", "reduce")
    }
    calls = prompt = cached = output = 0
    warm = system_cached

    def add(doc_tokens: int, stage: str, out_tokens: int, hit: int) -> None:
        nonlocal calls, prompt, cached, output, warm
        calls += 1
        prompt += system + doc_tokens + task_tokens[stage]
        cached += hit if warm else 0
        output += out_tokens
        warm = True

    if plan.strategy != MAP_REDUCE:
        doc = plan.chunks[0].tokens_est
        add(doc, "task", budget.max_output_tokens, system_hit)
        for _ in range(tasks - 1):
            add(doc, "task", budget.max_output_tokens, _cached_blocks(system + doc))
    else:
        for task in range(tasks):  # one map pass per task; tasks 2..N read each chunk from the cache
            for chunk in plan.chunks:
                hit = system_hit if task == 0 else _cached_blocks(system + chunk.tokens_est)
                add(chunk.tokens_est, "map", budget.partial_output_tokens, hit)
            sizes = [budget.partial_tokens_max] * len(plan.chunks)
            while len(sizes) > 1:
                groups = plan_reduce(sizes, budget)
                final = len(groups) == 1
                for g in groups:
                    if len(g) > 1:
                        out = budget.max_output_tokens if final else budget.partial_output_tokens
                        add(sum(sizes[i] for i in g), "reduce", out, system_hit)
                sizes = [budget.partial_tokens_max if len(g) > 1 else sizes[g[0]] for g in groups]
    return CostEstimate(calls, prompt, cached, output, usd(prompt, cached, output, model))
