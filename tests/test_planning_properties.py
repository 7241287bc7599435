"""Properties of planning over random documents and budgets, counted with the real o200k tokenizer.

Pages include empty ones, unicode, pages far larger than a chunk, and runs without whitespace.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimidocs.core import tokens
from kimidocs.core.planning import (
    PAGE_OVERHEAD_TOKENS,
    Budget,
    PageTokens,
    PlanningError,
    plan_document,
    plan_reduce,
    split_chunk,
)
from kimidocs.core.requests import render_pieces

WORDS = ["the", "budget", "Kimi", "page", "naïve", "日本語", "данные", "مرحبا", "🙂", "x" * 40, "1,234.56"]
SEPARATORS = [" ", " ", " ", "\n", "\n\n", ". ", "! ", "。", "\t", "  \n \n"]

word = st.sampled_from(WORDS) | st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=12
)
structured_text = st.lists(st.tuples(word, st.sampled_from(SEPARATORS)), max_size=400).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
raw_text = st.text(max_size=600)  # any code points, control characters and all
no_space_run = st.integers(min_value=50, max_value=3000).map(lambda n: "ab9" * n)
page_text = st.one_of(st.just(""), structured_text, raw_text, no_space_run)
chunk_limits = st.integers(min_value=60, max_value=2_000)


def _budget(chunk_tokens: int, partial_output: int = 1) -> Budget:
    """A budget with exactly `chunk_tokens` for text (the other terms are arbitrary but consistent)."""
    return Budget(
        window=chunk_tokens + 300,
        fixed_prompt_tokens=200,
        max_output_tokens=100,
        margin=0,
        partial_output_tokens=partial_output,
        safety_margin=0.0,
    )


def _pages(texts: list[str]) -> list[PageTokens]:
    return [PageTokens(i, t, tokens.count(t)) for i, t in enumerate(texts, start=1)]


def _word_at(text: str, pos: int) -> str:
    """The maximal run of non-whitespace around position `pos` of `text`."""
    start = pos
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = pos
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(page_text, min_size=1, max_size=8), limit=chunk_limits)
def test_chunks_fit_cover_every_page_once_in_order_and_never_cut_words(texts: list[str], limit: int) -> None:
    budget = _budget(limit)
    pages = _pages(texts)
    plan = plan_document(pages, budget)

    for chunk in plan.chunks:  # within budget, by our estimate and by a real count of what is sent
        assert chunk.tokens_est <= budget.chunk_tokens
        assert tokens.count(render_pieces(chunk.pieces)) <= budget.chunk_tokens
        assert chunk.first_page == chunk.pieces[0].page and chunk.last_page == chunk.pieces[-1].page

    pieces = [p for c in plan.chunks for p in c.pieces]
    assert [c.index for c in plan.chunks] == list(range(len(plan.chunks)))
    assert [p.page for p in pieces] == sorted(p.page for p in pieces)  # monotone page numbers
    by_page: dict[int, list[str]] = {}
    for piece in pieces:
        by_page.setdefault(piece.page, []).append(piece.text)
    assert sorted(by_page) == [p.number for p in pages]  # every page, empty ones too
    for page in pages:  # exactly once, in order: the parts concatenate back to the page
        assert "".join(by_page[page.number]) == page.text
    assert plan.coverage == 1.0 and not plan.skipped_pages

    # a cut inside a page is at whitespace or a CJK sentence end, or inside a run too long for any chunk
    text_limit = limit - PAGE_OVERHEAD_TOKENS
    for page in pages:
        parts = by_page[page.number]
        pos = 0
        for left in parts[:-1]:
            pos += len(left)
            if left[-1].isspace() or left[-1] in "。！？」』”’）" or page.text[pos].isspace():
                continue
            assert tokens.count(_word_at(page.text, pos)) > text_limit, (
                left[-20:],
                page.text[pos : pos + 20],
            )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(page_text, min_size=1, max_size=5), limit=st.integers(min_value=80, max_value=1_500))
def test_split_chunk_halves_keep_text_and_pages(texts: list[str], limit: int) -> None:
    plan = plan_document(_pages(texts), _budget(limit))
    for chunk in plan.chunks:
        parts = split_chunk(chunk)
        if not parts:
            continue
        assert len(parts) >= 2
        assert "".join(c.text for c in parts) == chunk.text
        assert all(c.index == chunk.index for c in parts)
        assert all(c.tokens_est < chunk.tokens_est for c in parts)
        assert [p.page for c in parts for p in c.pieces] == sorted(p.page for c in parts for p in c.pieces)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    limit=st.integers(min_value=100, max_value=50_000),
    n=st.integers(min_value=1, max_value=300),
)
def test_reduce_tree_terminates_with_every_group_within_budget(
    data: st.DataObject, limit: int, n: int
) -> None:
    partial_output = data.draw(st.integers(min_value=1, max_value=max(1, (limit // 2 - 20))))
    budget = _budget(limit, partial_output)
    cap = budget.partial_tokens_max
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=cap), min_size=n, max_size=n))
    levels = 0
    while len(sizes) > 1:
        groups = plan_reduce(sizes, budget)
        assert [i for g in groups for i in g] == list(range(len(sizes)))  # consecutive, each partial once
        assert all(sum(sizes[i] for i in g) <= budget.chunk_tokens for g in groups)
        assert len(groups) < len(sizes)  # progress at every level
        sizes = [cap if len(g) > 1 else sizes[g[0]] for g in groups]
        levels += 1
        assert levels <= 2 * n.bit_length() + 1


def test_reduce_refuses_partials_that_cannot_pair() -> None:
    budget = _budget(1_000)
    try:
        plan_reduce([600, 600, 600], budget)
    except PlanningError as err:
        assert "no two of 3 partials fit" in str(err)
    else:
        raise AssertionError("expected PlanningError")
    try:
        plan_reduce([1_001], budget)
    except PlanningError as err:
        assert "more than a reduce call holds" in str(err)
    else:
        raise AssertionError("expected PlanningError")
