"""Run a plan with an injected `call`: map chunks, repair or split what fails, reduce in levels.

No network here: `call(ChatRequest) -> CallOutcome` is the pipeline's (client + logging + resume),
or a fake in tests. What happens to a chunk:

    call -> finish_reason "length"  -> split the chunk in two (half budget) and read the halves
         -> invalid JSON / schema   -> one repair call showing the error -> still invalid: failed chunk
         -> ok                      -> citations checked against the chunk's pages -> partial

A chunk that still fails is listed in `failed_chunks` with its pages and reason, and coverage drops
below 1.0: nothing is dropped silently. Partials are reduced in levels (`planning.plan_reduce`) until
one summary remains; a reduce that fails falls back to a deterministic merge, so page citations of the
original document survive either way.

Scheduling for the prefix cache (DESIGN §3 Call): calls that start together all miss, so a group of
calls sharing a prefix may send its first call alone and fan out the rest once it returns. With a
`Scheduler` (kimidocs/core/schedule.py) that is decided from the numbers: the map calls of a document share
only the system message, which the run's first call has usually warmed, so they start together; several
tasks over one document share the document too, and go one first (`run/sequence.py` asks). Without one,
the first call of a group always goes alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kimidocs.core import tokens
from kimidocs.core.models import ModelInfo
from kimidocs.core.planning import PARTIAL_OVERHEAD_TOKENS, SINGLE_CALL, Chunk, Plan, plan_reduce, split_chunk
from kimidocs.core.requests import ChatRequest, ImageData, Partial, chunk_request, reduce_request
from kimidocs.core.results import (
    CitationReport,
    OutputInvalid,
    Summary,
    check_citations,
    merge_summaries,
    parse_summary,
    repair_request,
    summary_json,
)
from kimidocs.core.schedule import Scheduler
from prompts import Profile

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")

MAX_SPLITS = 3  # a chunk cut at max_tokens is halved at most this many times


@dataclass(frozen=True, slots=True)
class AnswerKind:
    """What map-reduce needs to know about the answers of one task (any schema):

    parse(content, partial)        the model's text -> a validated answer; raises `OutputInvalid`
                                   (`partial`: a map or intermediate reduce answer, nothing required)
    check(answer, pages, allowed)  bad citations dropped (results.check_citations' rules)
    merge(answers)                 the deterministic merge used when a reduce answer stays unusable
    dump(answer)                   compact JSON (reduce input, `raw`)
    trim(answer)                   one item fewer, to fit a reduce call; None when nothing is left
    """

    parse: Callable[[str, bool], Any]
    check: Callable[[Any, Mapping[int, str], range], tuple[Any, CitationReport]]
    merge: Callable[[list[Any]], Any]
    dump: Callable[[Any], str]
    trim: Callable[[Any], Any | None]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What `call` returns: the model's text and why it stopped; `meta` is the caller's to use."""

    content: str
    finish_reason: str | None = "stop"
    reused: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


Call = Callable[[ChatRequest], CallOutcome]


@dataclass(frozen=True, slots=True)
class FailedChunk:
    """Pages that could not be read, and why (they lower coverage and go to `failures`)."""

    index: int
    first_page: int
    last_page: int
    pages: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class MapReduceResult:
    """The outcome for one document. `summary` is None only when no chunk could be read."""

    doc_id: str
    summary: Summary | None
    coverage: float
    pages_read: int
    pages_total: int
    failed_chunks: tuple[FailedChunk, ...] = ()
    errors: tuple[str, ...] = ()
    raw: str | None = None
    calls: int = 0
    reduce_levels: int = 0
    answer: Any = None  # the final answer of any AnswerKind (the Summary itself on the summary path)


@dataclass
class _Read:
    """What reading one plan chunk produced: partials in page order and the parts that failed."""

    partials: list[tuple[int, int, Any]] = field(default_factory=list)
    failed: list[FailedChunk] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fan_out(
    items: Sequence[T], fn: Callable[[T], R], concurrency: int, *, first_alone: bool = True
) -> list[R]:
    """`fn` over `items`, results in order: the first alone (warms the cache), then the rest in parallel.

    The first exception is raised once running calls end; calls not yet started are cancelled.
    """
    if not items:
        return []
    results: list[R] = []
    rest: Sequence[T] = items
    if first_alone:
        results.append(fn(items[0]))
        rest = items[1:]
    if concurrency <= 1 or len(rest) <= 1:
        return results + [fn(i) for i in rest]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kimidocs-call") as pool:
        futures = [pool.submit(fn, i) for i in rest]
        try:
            results.extend(f.result() for f in futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


@dataclass(frozen=True, slots=True)
class _Level:
    """One reduce level: its number, whether it is the last, its inputs and their rendering."""

    level: int
    final: bool
    partials: list[tuple[int, int, Any]]
    rendered: list[Partial]


class _Runner:
    """One document's map-reduce; holds what the steps share (and a thread-safe call counter)."""

    def __init__(
        self,
        plan: Plan,
        profile: Profile,
        model: ModelInfo,
        call: Call,
        concurrency: int,
        images: Mapping[int, Sequence[ImageData]] | None,
        page_texts: Mapping[int, str],
        counter: Callable[[str], int],
        answers: AnswerKind,
    ) -> None:
        self.answers = answers
        self.plan = plan
        self.profile = profile
        self.model = model
        self._call = call
        self.concurrency = concurrency
        self.images = images
        self.page_texts = page_texts
        self.counter = counter
        self.calls = 0
        self._lock = threading.Lock()

    def call(self, request: ChatRequest) -> CallOutcome:
        with self._lock:
            self.calls += 1
        return self._call(request)

    # ------------------------------------------------------------------ map

    def read(self, chunk: Chunk, single: bool, depth: int = 0) -> _Read:
        """Read one chunk (a single call when `single`), splitting on `length`, repairing bad output."""
        request = chunk_request(
            self.profile,
            self.model,
            chunk,
            self.plan.budget,
            pages_total=self.plan.pages_total,
            parts=len(self.plan.chunks),
            single=single,
            images=self.images,
        )
        outcome = self.call(request)
        summary: Any = None
        parse = self.answers.parse
        if outcome.finish_reason != "length":
            try:
                summary = parse(outcome.content, not single)
            except OutputInvalid as err:
                outcome = self.call(repair_request(request, err.raw, err.error, profile=self.profile))
                if outcome.finish_reason != "length":
                    try:
                        summary = parse(outcome.content, not single)
                    except OutputInvalid as err2:
                        return _Read(
                            failed=[_failed(chunk, f"invalid output after one repair: {err2.error}")]
                        )
        if summary is None:  # cut at max_tokens: read the chunk in smaller parts instead
            return self._split(chunk, depth)
        allowed = range(chunk.first_page, chunk.last_page + 1)
        summary, report = self.answers.check(summary, self.page_texts, allowed)
        read = _Read(partials=[(chunk.first_page, chunk.last_page, summary)])
        if report.dropped:
            read.notes.append(f"pages {chunk.first_page}-{chunk.last_page}: {report.describe()}")
        return read

    def _split(self, chunk: Chunk, depth: int) -> _Read:
        parts = split_chunk(chunk, self.counter) if depth < MAX_SPLITS else ()
        if not parts:
            reason = "output cut at max_tokens (finish_reason=length) and the chunk cannot be split further"
            return _Read(failed=[_failed(chunk, reason)])
        out = _Read(
            notes=[f"pages {chunk.first_page}-{chunk.last_page}: output too long, read in {len(parts)} parts"]
        )
        for part in parts:
            sub = self.read(part, single=False, depth=depth + 1)
            out.partials += sub.partials
            out.failed += sub.failed
            out.notes += sub.notes
        return out

    # ------------------------------------------------------------------ reduce

    def reduce(self, partials: list[tuple[int, int, Any]], notes: list[str]) -> tuple[Any, int]:
        """Reduce partials level by level until one remains; returns it and the number of levels."""
        level = 0
        while len(partials) > 1:
            level += 1
            rendered = [self._render(p, notes) for p in partials]
            groups = plan_reduce([r.cost for r in rendered], self.plan.budget)
            step = _Level(level, len(groups) == 1, partials, rendered)
            partials = fan_out(
                groups,
                lambda g, step=step: self._reduce_group(step, g, notes),  # type: ignore[misc]
                self.concurrency,
                first_alone=False,
            )
        return partials[0][2], level

    def _reduce_group(self, step: _Level, group: list[int], notes: list[str]) -> tuple[int, int, Any]:
        """One reduce call over a group of partials (a group of one passes through unchanged)."""
        if len(group) == 1:
            return step.partials[group[0]]
        request = reduce_request(
            self.profile,
            self.model,
            [step.rendered[i] for i in group],
            self.plan.budget,
            pages_total=self.plan.pages_total,
            level=step.level,
            index=group[0],
            final=step.final,
        )
        first, last = step.partials[group[0]][0], step.partials[group[-1]][1]
        summary = self._reduce_call(request, notes, partial=not step.final)
        if summary is None:
            summary = self.answers.merge([step.partials[i][2] for i in group])
            notes.append(f"reduce level {step.level} pages {first}-{last}: merged without the model")
        summary, report = self.answers.check(summary, self.page_texts, range(first, last + 1))
        if report.dropped:
            notes.append(f"reduce level {step.level} pages {first}-{last}: {report.describe()}")
        return (first, last, summary)

    def _reduce_call(self, request: ChatRequest, notes: list[str], *, partial: bool = False) -> Any:
        outcome = self.call(request)
        if outcome.finish_reason == "length":
            notes.append(f"reduce pages {request.first_page}-{request.last_page}: output cut at max_tokens")
            return None
        try:
            return self.answers.parse(outcome.content, partial)
        except OutputInvalid as err:
            outcome = self.call(repair_request(request, err.raw, err.error, profile=self.profile))
            try:
                if outcome.finish_reason == "length":
                    raise OutputInvalid("output cut at max_tokens", outcome.content)
                return self.answers.parse(outcome.content, partial)
            except OutputInvalid as err2:
                notes.append(f"reduce pages {request.first_page}-{request.last_page}: {err2.error}")
                return None

    def _render(self, partial: tuple[int, int, Any], notes: list[str]) -> Partial:
        """A partial as reduce input; trimmed (last list items first) if it is over the size a reduce
        call was planned for, which only happens when the model's output ran over our estimate."""
        first, last, summary = partial
        limit = self.plan.budget.partial_tokens_max
        text = self.answers.dump(summary)
        n = self.counter(text)
        trimmed = False
        trim = self.answers.trim
        while n + PARTIAL_OVERHEAD_TOKENS > limit and trim(summary) is not None:
            summary = trim(summary)
            text = self.answers.dump(summary)
            n = self.counter(text)
            trimmed = True
        if trimmed:
            notes.append(f"pages {first}-{last}: partial trimmed to fit a reduce call")
        return Partial(first, last, text, n)


def _trim(summary: Summary) -> Summary | None:
    """`summary` with one item fewer (the longest list loses its last item), or None if nothing is left."""
    lists = {name: getattr(summary, name) for name in ("entities", "amounts", "dates", "key_points")}
    name = max(lists, key=lambda k: len(lists[k]))
    if not lists[name]:
        if len(summary.summary) > 200:
            return summary.model_copy(update={"summary": summary.summary[: len(summary.summary) // 2]})
        return None
    return summary.model_copy(update={name: lists[name][:-1]})


SUMMARY_ANSWERS = AnswerKind(
    parse=lambda content, _partial: parse_summary(content),
    check=check_citations,
    merge=merge_summaries,
    dump=summary_json,
    trim=_trim,
)


def _failed(chunk: Chunk, reason: str) -> FailedChunk:
    return FailedChunk(chunk.index, chunk.first_page, chunk.last_page, chunk.pages, reason)


def _page_texts(plan: Plan, document: Any | None) -> dict[int, str]:
    if document is not None:
        return {p.number: p.text for p in document.pages}
    texts: dict[int, list[str]] = {}
    for chunk in plan.chunks:
        for piece in chunk.pieces:
            texts.setdefault(piece.page, []).append(piece.text)
    return {page: "".join(parts) for page, parts in texts.items()}


def _images(document: Any | None) -> dict[int, list[ImageData]] | None:
    if document is None:
        return None
    out = {p.number: [(i.mime, i.data) for i in p.images] for p in document.pages if getattr(p, "images", ())}
    return out or None


def run_plan(
    doc_id: str,
    plan: Plan,
    profile: Profile,
    model: ModelInfo,
    call: Call,
    *,
    concurrency: int = 4,
    document: Any | None = None,
    counter: Callable[[str], int] = tokens.count,
    scheduler: Scheduler | None = None,
    answers: AnswerKind = SUMMARY_ANSWERS,
) -> MapReduceResult:
    """Execute `plan` for one document through `call`; never drops a page without saying so.

    `document` (an extractors Document) supplies whole-page text for evidence checks and the images
    of scanned pages; without it the plan's own text is used. `scheduler` decides whether the first
    map call goes alone (without one, it always does). `answers` says how the task's answers are
    parsed, checked, merged and rendered (a Summary by default). Exceptions raised by `call` (budget,
    aborted run, non-retryable API errors) propagate to the caller.
    """
    runner = _Runner(
        plan,
        profile,
        model,
        call,
        concurrency,
        _images(document),
        _page_texts(plan, document),
        counter,
        answers,
    )
    single = plan.strategy == SINGLE_CALL
    first_alone = True
    if scheduler is not None and len(plan.chunks) > 1:  # map calls share only the system message
        first_alone = scheduler.group(
            f"document {doc_id[:12]} map", len(plan.chunks), scheduler.system_tokens
        ).first_alone
    reads: list[_Read] = fan_out(
        list(plan.chunks), lambda c: runner.read(c, single), concurrency, first_alone=first_alone
    )
    partials = [p for r in reads for p in r.partials]
    failed = tuple(f for r in reads for f in r.failed)
    notes = [n for r in reads for n in r.notes] + [
        f"pages {f.first_page}-{f.last_page}: {f.reason}" for f in failed
    ]
    failed_pages = {p for f in failed for p in f.pages}
    chunk_pages = {p for c in plan.chunks for p in c.pages}
    pages_read = len(chunk_pages - failed_pages)
    coverage = pages_read / plan.pages_total if plan.pages_total else 0.0
    if not partials:
        return MapReduceResult(
            doc_id, None, coverage, pages_read, plan.pages_total, failed, tuple(notes), calls=runner.calls
        )
    summary, levels = runner.reduce(partials, notes)
    return MapReduceResult(
        doc_id,
        summary if isinstance(summary, Summary) else None,
        coverage,
        pages_read,
        plan.pages_total,
        failed,
        tuple(notes),
        raw=answers.dump(summary),
        calls=runner.calls,
        reduce_levels=levels,
        answer=summary,
    )
