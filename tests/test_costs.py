"""Dollars from usage and from plans, with prices from the model table."""

from __future__ import annotations

import pytest

from kimidocs.core import tokens
from kimidocs.core.costs import CACHE_BLOCK_TOKENS, call_cost, estimate_plan_cost, lower_bound
from kimidocs.core.models import get_model
from kimidocs.core.planning import PageTokens, budget_for, plan_document
from kimidocs.core.records import Usage
from prompts import load_profile

PROFILE = load_profile("summary")
K25 = get_model("kimi-k2.5")


def test_call_cost_prices_hits_misses_and_output_separately() -> None:
    usage = Usage(prompt_tokens=1_000_000, cached_tokens=400_000, completion_tokens=10_000)
    expected = 0.6 * K25.price_cache_miss + 0.4 * K25.price_cache_hit + 0.01 * K25.price_output
    assert call_cost(usage, K25) == pytest.approx(expected)
    assert call_cost(Usage(), K25) == 0.0


def test_lower_bound_bills_each_document_token_once_at_the_miss_price() -> None:
    assert lower_bound(2_000_000, 1_000_000, K25) == pytest.approx(
        2 * K25.price_cache_miss + K25.price_output
    )


def _pages(n: int, words: int) -> list[PageTokens]:
    text = " ".join(["lorem"] * words)
    return [PageTokens(i, text, tokens.count(text)) for i in range(1, n + 1)]


def test_single_call_estimate_and_tasks_reading_the_document_from_cache() -> None:
    plan = plan_document(_pages(20, 500), budget_for(K25, PROFILE))
    one = estimate_plan_cost(plan, PROFILE, K25)
    assert (one.calls, one.cached_tokens_expected) == (1, 0)
    assert one.prompt_tokens > plan.tokens_est
    assert one.output_tokens == plan.budget.max_output_tokens
    three = estimate_plan_cost(plan, PROFILE, K25, tasks=3)
    assert three.calls == 3
    # tasks 2 and 3 read system + document (whole cache blocks) at the hit price
    assert three.cached_tokens_expected >= 2 * (plan.tokens_est - CACHE_BLOCK_TOKENS)
    assert three.usd < 3 * one.usd


def test_map_reduce_estimate_reads_the_system_prompt_from_cache_after_the_first_call() -> None:
    small = get_model("kimidocs-test-8k")
    plan = plan_document(_pages(60, 400), budget_for(small, PROFILE))
    est = estimate_plan_cost(plan, PROFILE, small)
    assert est.calls == plan.calls > len(plan.chunks)
    system_blocks = (tokens.count(PROFILE.system) + tokens.MESSAGE_OVERHEAD) // CACHE_BLOCK_TOKENS
    assert est.cached_tokens_expected == (est.calls - 1) * system_blocks * CACHE_BLOCK_TOKENS
    assert est.prompt_tokens > plan.tokens_est  # every chunk read once, plus prompts and partials
    warm = estimate_plan_cost(plan, PROFILE, small, system_cached=True)
    assert warm.cached_tokens_expected > est.cached_tokens_expected and warm.usd < est.usd
    assert est.usd > lower_bound(plan.tokens_est, 0, small)
