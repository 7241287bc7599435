"""Document + budget -> Plan: one call when the document fits, else page-aligned map-reduce.

Pure: no network, no I/O. Token counts come in with the pages (counted once by the caller) and
an injectable `counter` (default: offline o200k) is used only to split a page too big for a chunk.

    pages --iter_pieces--> pieces (a page, or a part of an oversized page) --iter_chunks--> chunks

A page larger than a chunk is cut at paragraph, then sentence, then line, then word boundaries, so
no word is cut (only a run of text without any whitespace longer than a whole chunk is cut at a
character). The separator stays at the end of the piece before the cut, so the pieces of a page
concatenate back to exactly the page's text; every piece keeps its page number, so citations survive.

Why the budget looks like it does: prompt + max_tokens must fit the window (kimi-api.md §1) and our
o200k count is an estimate of Kimi's, so the prompt is kept `SAFETY_MARGIN` below what is left after
the output; a repair call adds a bounded excerpt to the same prompt, so room for it is reserved too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from kimidocs.core import tokens
from kimidocs.core.models import ModelInfo
from prompts import Profile

Counter = Callable[[str], int]

# `<page number="1234567">\n` + `\n</page>` + the "\n" between blocks is 13 o200k tokens; one more
# for a merge across a block boundary. Counted per piece in every chunk estimate.
PAGE_OVERHEAD_TOKENS = 14
# `<partial first_page="123456" last_page="123456">` + `</partial>\n`, plus boundary slack.
PARTIAL_OVERHEAD_TOKENS = 20
# Chat format: a few tokens per message for role markers, plus the reply priming.
PRIMING_TOKENS = 3
# A repair call repeats the request plus an excerpt of the bad answer and the error, both cut to these.
REPAIR_RAW_TOKENS = 200
REPAIR_ERROR_TOKENS = 120
# Below these a window is too small to do anything useful with this profile.
MIN_CHUNK_TOKENS = 256
MIN_PARTIAL_OUTPUT_TOKENS = 256


class Strategy(StrEnum):
    """How a document is read: in one call, or map-reduce (chunks, then reduce levels)."""

    SINGLE_CALL = "single"
    MAP_REDUCE = "map_reduce"


SINGLE_CALL = Strategy.SINGLE_CALL
MAP_REDUCE = Strategy.MAP_REDUCE


class PlanningError(ValueError):
    """The document cannot be planned within the model's window (names the numbers that do not fit)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Token arithmetic of one (model, profile): what is left for document text in one call.

    Attributes:
        window: the model's context window.
        fixed_prompt_tokens: system + the longest task + message overhead + repair reserve.
        max_output_tokens: max_tokens of a final answer (single call, last reduce).
        margin: tokens kept free because our count is an estimate of Kimi's.
        partial_output_tokens: max_tokens of a map partial or an intermediate reduce.
        safety_margin: the relative margin `margin` was derived from.
    """

    window: int
    fixed_prompt_tokens: int
    max_output_tokens: int
    margin: int
    partial_output_tokens: int
    safety_margin: float = tokens.SAFETY_MARGIN

    @property
    def chunk_tokens(self) -> int:
        """Estimated tokens of document text (rendered page blocks) one call may carry."""
        return self.window - self.fixed_prompt_tokens - self.max_output_tokens - self.margin

    @property
    def partial_tokens_max(self) -> int:
        """Upper bound of one rendered partial in a reduce call (its output cap, in our count)."""
        return math.ceil(self.partial_output_tokens * (1 + self.safety_margin)) + PARTIAL_OVERHEAD_TOKENS


def budget_for(
    model: ModelInfo,
    profile: Profile,
    *,
    counter: Counter = tokens.count,
    safety_margin: float = tokens.SAFETY_MARGIN,
    window: int | None = None,
) -> Budget:
    """The budget for `profile` on `model`; `window` overrides for tests/benchmarks.

    Raises `PlanningError` when the window cannot hold a minimal chunk or two partials in a reduce.
    """
    window = window or model.window
    max_out = min(profile.max_output_tokens, model.max_output)
    big = 10**6  # placeholders filled with wide numbers so the estimate is an upper bound
    task_tokens = max(
        counter(profile.task(stage, part=big, parts=big, first_page=big, last_page=big, total_pages=big))
        for stage in ("task", "map", "reduce")
    )
    repair = counter(profile.task("repair", error="")) + REPAIR_RAW_TOKENS + REPAIR_ERROR_TOKENS
    fixed = counter(profile.system) + task_tokens + repair + 5 * tokens.MESSAGE_OVERHEAD + PRIMING_TOKENS
    room = window - max_out
    margin = math.ceil(room * safety_margin / (1 + safety_margin))
    chunk = room - margin - fixed
    if chunk < MIN_CHUNK_TOKENS:
        raise PlanningError(
            f"{model.id}: window {window:,} leaves {chunk:,} tokens for text after {fixed:,} fixed prompt, "
            f"{max_out:,} output and {margin:,} margin (need >= {MIN_CHUNK_TOKENS})"
        )
    # A reduce call must hold two partials, each at most its max_tokens (plus our estimate's error).
    fit_two = math.floor((chunk / 2 - PARTIAL_OVERHEAD_TOKENS) / (1 + safety_margin))
    partial = min(profile.partial_output_tokens, max_out, fit_two)
    if partial < MIN_PARTIAL_OUTPUT_TOKENS:
        raise PlanningError(
            f"{model.id}: a reduce call of {chunk:,} text tokens cannot hold two partials of "
            f">= {MIN_PARTIAL_OUTPUT_TOKENS} output tokens"
        )
    return Budget(window, fixed, max_out, margin, partial, safety_margin)


@dataclass(frozen=True, slots=True)
class PageTokens:
    """A page as planning sees it: number, text, its token count; `unreadable` says why it is skipped."""

    number: int
    text: str
    tokens: int
    unreadable: str | None = None  # e.g. "no text layer": listed in Plan.skipped_pages, never silently lost
    images: int = 0  # page images sent with the text (scanned pages), estimated at IMAGE_TOKENS_EST each


# Kimi does not publish its image token cost; an estimate on the high side keeps a chunk within the window.
IMAGE_TOKENS_EST = 1_500


def page_tokens_of(document: Any, model: ModelInfo, counts: Sequence[int] | None = None) -> list[PageTokens]:
    """Planning's view of an extracted Document: counts (given or computed), and scanned pages either
    read as images (multimodal model) or listed as unreadable, so coverage says they were not read."""
    if counts is None:
        counts = tokens.count_many([p.text for p in document.pages])
    out = []
    for page, n in zip(document.pages, counts, strict=True):
        if page.needs_ocr and not model.images:
            reason = f"no text layer and {model.id} reads no images"
            out.append(PageTokens(page.number, page.text, n, unreadable=reason))
        else:
            out.append(
                PageTokens(page.number, page.text, n, images=page.image_count if page.needs_ocr else 0)
            )
    return out


@dataclass(frozen=True, slots=True)
class Piece:
    """A page, or one part of a page too big for a chunk.

    `part` is () for a whole page, (k,) for the k-th part (from 1) of a split page, and (k, j) for
    the j-th part of part k when a chunk was split again after a `length` finish.
    """

    page: int
    part: tuple[int, ...]
    text: str
    tokens: int
    images: int = 0

    @property
    def cost(self) -> int:
        """Estimated tokens of this piece once rendered as a page block."""
        return self.tokens + PAGE_OVERHEAD_TOKENS + self.images * IMAGE_TOKENS_EST


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive pieces that go into one call. `tokens_est` includes the page block markup."""

    index: int
    first_page: int
    last_page: int
    pieces: tuple[Piece, ...]
    tokens_est: int

    @property
    def pages(self) -> tuple[int, ...]:
        """Distinct page numbers in order."""
        return tuple(dict.fromkeys(p.page for p in self.pieces))

    @property
    def text(self) -> str:
        """The pieces' text joined as it came (no markup): for coverage checks."""
        return "".join(p.text for p in self.pieces)


@dataclass(frozen=True, slots=True)
class SkippedPage:
    page: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What will be sent. `reduce_levels` and `calls` are estimates (partials at their cap).

    `coverage` = pages in chunks / pages total: 1.0 unless a page could not be read at all, and such
    pages are in `skipped_pages` with the reason.
    """

    strategy: Strategy
    chunks: tuple[Chunk, ...]
    reduce_levels: int
    calls: int
    coverage: float
    pages_total: int
    tokens_est: int  # document text tokens (pages, no markup)
    budget: Budget
    skipped_pages: tuple[SkippedPage, ...] = ()
    reduce_groups: tuple[int, ...] = field(default=())  # estimated reduce calls per level


# ---------------------------------------------------------------------------------------------- splitting

_BOUNDARIES = (
    re.compile(r"\n[ \t\r\f\v]*\n\s*"),  # paragraph: a blank line
    re.compile(r"[.!?…][\"'”’»)\]]*\s+|[。！？]+[」』”’）]*\s*"),  # sentence end
    re.compile(r"\n\s*"),  # line
    re.compile(r"\s+"),  # word
)


def _cut(text: str, boundary: re.Pattern[str]) -> list[str]:
    """`text` cut after every match of `boundary` (separators stay with the left part)."""
    parts, start = [], 0
    for m in boundary.finditer(text):
        if m.end() > start and m.end() < len(text):
            parts.append(text[start : m.end()])
            start = m.end()
    parts.append(text[start:])
    return [p for p in parts if p]


def _hard_cut(text: str, limit: int, counter: Counter) -> Iterator[str]:
    """Cut whitespace-free text at characters: the longest prefix within `limit`, repeatedly.

    The search looks at most `limit * 32` characters ahead (no o200k token is that long), so a
    huge run costs O(n log n), not O(n^2).
    """
    while text:
        window = text[: limit * 32]
        if len(window) == len(text) and counter(text) <= limit:
            yield text
            return
        lo, hi = 1, len(window)  # largest n with counter(text[:n]) <= limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if counter(window[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        yield text[:lo]
        text = text[lo:]


def split_text(
    text: str, limit: int, counter: Counter = tokens.count, level: int = 0
) -> list[tuple[str, int]]:
    """`text` as consecutive parts of at most `limit` tokens each, with their exact counts.

    Cut at the coarsest boundary that works (paragraph, sentence, line, word, then character);
    "".join(parts) == text.
    """
    total = counter(text)
    if total <= limit:
        return [(text, total)] if text else []
    if level >= len(_BOUNDARIES):
        return [(p, counter(p)) for p in _hard_cut(text, limit, counter)]
    segments = _cut(text, _BOUNDARIES[level])
    if len(segments) == 1:
        return split_text(text, limit, counter, level + 1)
    out: list[tuple[str, int]] = []
    group: list[str] = []
    group_est = 0
    for seg in segments:
        seg_tokens = counter(seg)
        if seg_tokens > limit:
            out.extend(_flush(group, limit, counter))
            group, group_est = [], 0
            out.extend(split_text(seg, limit, counter, level + 1))
        elif group_est + seg_tokens <= limit:
            group.append(seg)
            group_est += seg_tokens
        else:
            out.extend(_flush(group, limit, counter))
            group, group_est = [seg], seg_tokens
    out.extend(_flush(group, limit, counter))
    return out


def _flush(group: list[str], limit: int, counter: Counter) -> list[tuple[str, int]]:
    """Join `group` into parts whose exact joined count is within `limit` (sums of parts can differ)."""
    out: list[tuple[str, int]] = []
    while group:
        n = len(group)
        joined = "".join(group[:n])
        t = counter(joined)
        while t > limit and n > 1:
            n -= 1
            joined = "".join(group[:n])
            t = counter(joined)
        out.append((joined, t))
        group = group[n:]
    return out


# ---------------------------------------------------------------------------------------------- chunking


def iter_pieces(
    pages: Iterable[PageTokens],
    limit: int,
    counter: Counter = tokens.count,
    skipped: list[SkippedPage] | None = None,
) -> Iterator[Piece]:
    """Pieces of at most `limit` rendered tokens, in page order. Unreadable pages go to `skipped`."""
    for page in pages:
        if page.unreadable is not None:
            if skipped is not None:
                skipped.append(SkippedPage(page.number, page.unreadable))
            continue
        whole = Piece(page.number, (), page.text, page.tokens, page.images)
        if whole.cost <= limit:
            yield whole
            continue
        text_limit = limit - PAGE_OVERHEAD_TOKENS
        parts = split_text(page.text, text_limit, counter)
        for k, (text, t) in enumerate(parts, start=1):
            yield Piece(page.number, (k,), text, t, page.images if k == 1 else 0)


def iter_chunks(pieces: Iterable[Piece], limit: int, start_index: int = 0) -> Iterator[Chunk]:
    """Greedy chunks of consecutive pieces, each within `limit` estimated tokens."""
    group: list[Piece] = []
    total = 0
    index = start_index
    for piece in pieces:
        if group and total + piece.cost > limit:
            yield _chunk(index, group, total)
            index += 1
            group, total = [], 0
        group.append(piece)
        total += piece.cost
    if group:
        yield _chunk(index, group, total)


def _chunk(index: int, pieces: list[Piece], total: int) -> Chunk:
    return Chunk(index, pieces[0].page, pieces[-1].page, tuple(pieces), total)


def plan_document(pages: Sequence[PageTokens], budget: Budget, counter: Counter = tokens.count) -> Plan:
    """The plan for a document: `single` when it fits one call, else page-aligned map-reduce chunks."""
    limit = budget.chunk_tokens
    skipped: list[SkippedPage] = []
    pieces = list(iter_pieces(pages, limit, counter, skipped))
    if not pieces:
        reason = "; ".join(f"page {s.page}: {s.reason}" for s in skipped[:5]) or "no pages"
        raise PlanningError(f"nothing to read ({reason})")
    chunks = tuple(iter_chunks(pieces, limit))
    pages_total = len(pages)
    read = pages_total - len(skipped)
    text_tokens = sum(p.tokens for p in pages if p.unreadable is None)
    strategy, reduce_levels, calls, reduce_groups = SINGLE_CALL, 0, 1, tuple[int, ...]()
    if len(chunks) > 1:
        groups = estimate_reduce(len(chunks), budget)
        strategy, reduce_levels, calls = MAP_REDUCE, len(groups), len(chunks) + sum(groups)
        reduce_groups = tuple(groups)
    return Plan(
        strategy,
        chunks,
        reduce_levels=reduce_levels,
        calls=calls,
        coverage=read / pages_total,
        pages_total=pages_total,
        tokens_est=text_tokens,
        budget=budget,
        skipped_pages=tuple(skipped),
        reduce_groups=reduce_groups,
    )


def split_chunk(chunk: Chunk, counter: Counter = tokens.count) -> tuple[Chunk, ...]:
    """`chunk` re-planned at half its size (after a `length` finish); () when it cannot shrink.

    The parts keep the chunk's index; a piece larger than the new limit is cut again with a
    longer `part` path, so page numbers and order are kept.
    """
    limit = max(chunk.tokens_est // 2 + PAGE_OVERHEAD_TOKENS, MIN_CHUNK_TOKENS // 2)
    if chunk.tokens_est <= limit:
        return ()
    pieces: list[Piece] = []
    for piece in chunk.pieces:
        if piece.cost <= limit:
            pieces.append(piece)
            continue
        parts = split_text(
            piece.text, limit - PAGE_OVERHEAD_TOKENS - piece.images * IMAGE_TOKENS_EST, counter
        )
        for k, (text, t) in enumerate(parts, start=1):
            pieces.append(Piece(piece.page, (*piece.part, k), text, t, piece.images if k == 1 else 0))
    parts_chunks = tuple(replace(c, index=chunk.index) for c in iter_chunks(pieces, limit))
    return parts_chunks if len(parts_chunks) > 1 else ()


# ---------------------------------------------------------------------------------------------- reduce


def plan_reduce(partial_tokens: Sequence[int], budget: Budget) -> list[list[int]]:
    """One reduce level: consecutive partial indexes grouped so each group fits one call.

    Greedy and deterministic. A group of one is passed on to the next level without a call.
    Terminates because a partial is at most `budget.partial_tokens_max` <= chunk_tokens / 2, so every
    group but the last holds two or more; raises `PlanningError` when a partial is too big for that.
    """
    limit = budget.chunk_tokens
    for i, t in enumerate(partial_tokens):
        if t > limit:
            raise PlanningError(f"partial {i} has {t:,} tokens, more than a reduce call holds ({limit:,})")
    groups: list[list[int]] = []
    total = 0
    for i, t in enumerate(partial_tokens):
        if groups and total + t <= limit:
            groups[-1].append(i)
            total += t
        else:
            groups.append([i])
            total = t
    if len(partial_tokens) > 1 and len(groups) == len(partial_tokens):
        raise PlanningError(
            f"no two of {len(partial_tokens)} partials fit one reduce call of {limit:,} tokens "
            f"(largest {max(partial_tokens):,}; a partial may use at most {budget.partial_tokens_max:,})"
        )
    return groups


def estimate_reduce(n_partials: int, budget: Budget) -> list[int]:
    """Reduce calls per level for `n_partials` partials at their size cap (an upper bound)."""
    sizes = [budget.partial_tokens_max] * n_partials
    calls: list[int] = []
    while len(sizes) > 1:
        groups = plan_reduce(sizes, budget)
        calls.append(sum(1 for g in groups if len(g) > 1))
        sizes = [budget.partial_tokens_max if len(g) > 1 else sizes[g[0]] for g in groups]
    return calls
