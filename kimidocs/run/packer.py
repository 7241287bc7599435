"""Packing for a run: small documents of a group several to a request, when requests per minute bind.

A run's files are cut into groups (`groups`): one file each when packing is off, a few packs' worth
when it is on. `analyze_group` runs one group from start to end -- the documents prepared, small
single-call ones grouped by a `PackBuilder`, each full group sent as one request, the rest flushed at
the group's end -- so no state crosses groups and a group can run in any thread or process. Each
document of a pack is still validated and stored on its own, as if it had been read alone; one whose
part of the answer is unusable is read again alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kimidocs.core.budget import BudgetExceeded
from kimidocs.core.mapreduce import MapReduceResult
from kimidocs.core.packing import (
    PackBuilder,
    is_small,
    max_docs_per_pack,
    pack_output_tokens,
    packing_pays,
)
from kimidocs.core.planning import SINGLE_CALL, budget_for
from kimidocs.core.records import CallTotals
from kimidocs.core.requests import PackedDocument, pack_request
from kimidocs.core.results import OutputInvalid, Summary, check_packed_part, parse_packed, summary_json
from kimidocs.kimi.errors import KimiError
from kimidocs.kimi.limits import RateLimits
from kimidocs.run.caller import KimiCaller
from kimidocs.run.context import DocumentOutcome, PackCounts, RunAborted, RunContext
from kimidocs.run.discover import FoundFile
from kimidocs.run.document import (
    Attempt,
    analyze_file,
    finished,
    guarded,
    prepare,
    started,
    store_result,
    summarise,
)
from kimidocs.run.sequence import Prepared
from kimidocs.store import StoreError

#: Files per group when packing is on, in packs: a group fills this many packs before it flushes.
PACKS_PER_GROUP = 1


@dataclass(frozen=True, slots=True)
class GroupResult:
    """What one group did: its documents' outcomes (in file order) and what packing saved."""

    outcomes: tuple[DocumentOutcome, ...]
    packs: PackCounts = field(default_factory=PackCounts)


def _account_limits(ctx: RunContext) -> RateLimits | None:
    """The limits the client's limiter enforces, else the configured tier's."""
    limits = getattr(ctx.backend.client.limiter, "limits", None)
    if isinstance(limits, RateLimits):
        return limits
    try:
        return RateLimits.for_tier(ctx.settings.tier)
    except ValueError:
        return None


def packing_on(ctx: RunContext) -> bool:
    """`pack` as asked; by default only where RPM binds for a typical small document read alone."""
    if ctx.options.dry_run or ctx.options.pack is False or ctx.declared is not None:
        return False  # a declared profile's tasks share one document's prefix instead
    if ctx.options.pack:
        return True
    budget = budget_for(ctx.model, ctx.profile)
    typical = budget.fixed_prompt_tokens + 2_000 + budget.max_output_tokens  # a ~2,000-token document
    return packing_pays(_account_limits(ctx), typical)


def packer_for(ctx: RunContext) -> Packer | None:
    """A packer for one group when packing is on (`RunOptions.pack`, else where RPM binds), else None."""
    return Packer(ctx) if packing_on(ctx) else None


def groups(ctx: RunContext, files: list[FoundFile]) -> list[list[FoundFile]]:
    """The run's files in groups, in order: one file each, or with packing on a pack's worth each."""
    size = PACKS_PER_GROUP * max_docs_per_pack(ctx.model) if packing_on(ctx) else 1
    return [files[i : i + size] for i in range(0, len(files), size)]


def analyze_group(ctx: RunContext, files: list[FoundFile]) -> GroupResult:
    """One group from start to end: every file's outcome (none is lost: a pack is flushed at the end)."""
    packer = packer_for(ctx)
    if packer is None:
        return GroupResult(tuple(analyze_file(ctx, found) for found in files))
    outcomes = [o for found in files for o in packer.analyze(found)]
    outcomes += packer.flush()
    order = {found.path: i for i, found in enumerate(files)}
    return GroupResult(tuple(sorted(outcomes, key=lambda o: order[o.path])), packer.counts)


class Packer:
    """Packing within one group: small single-call documents wait in a `PackBuilder`; a full group goes
    out as one request, the rest (large, scanned) are read alone. `analyze` may return the outcomes of
    other documents (those of the pack it sent) or none; `flush` sends what still waits."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.budget = budget_for(ctx.model, ctx.profile)
        self.builder: PackBuilder[tuple[Prepared, Attempt, float]] = PackBuilder(
            lambda item: _pack_tokens(item[0]), self.budget, ctx.model
        )
        self.counts = PackCounts()

    def analyze(self, found: FoundFile) -> list[DocumentOutcome]:
        """One file: its outcome now, or (packable) none until its pack is sent."""
        t0 = started(self.ctx, found)
        attempt = Attempt(found)
        prepared = guarded(self.ctx, attempt, lambda a: prepare(self.ctx, a))
        if isinstance(prepared, DocumentOutcome):
            return [finished(self.ctx, prepared, t0)]
        if not self._packable(prepared):
            return [self._alone(prepared, attempt, t0)]
        group = self.builder.add((prepared, attempt, t0))
        return self._send(group) if group else []

    def flush(self) -> list[DocumentOutcome]:
        """Send the documents still waiting (the last, partly filled pack)."""
        return self._send(self.builder.flush())

    def _packable(self, p: Prepared) -> bool:
        plan = p.plan
        return (
            plan.strategy == SINGLE_CALL
            and not plan.skipped_pages
            and not any(piece.images for piece in plan.chunks[0].pieces)
            and is_small(_pack_tokens(p), self.budget)
        )

    def _alone(self, p: Prepared, attempt: Attempt, t0: float) -> DocumentOutcome:
        return finished(self.ctx, guarded(self.ctx, attempt, lambda a: summarise(self.ctx, a, p)), t0)

    def _send(self, group: tuple[tuple[Prepared, Attempt, float], ...]) -> list[DocumentOutcome]:
        """One pack request; each document's part validated and stored alone, a bad part re-read alone."""
        if len(group) <= 1:
            return [self._alone(p, a, t0) for p, a, t0 in group]
        ctx = self.ctx
        labels = {f"D{i + 1}": item for i, item in enumerate(group)}  # short ids: cheap, hard to garble
        docs = [PackedDocument(label, p.plan.chunks[0].pieces) for label, (p, _a, _t) in labels.items()]
        request = pack_request(
            ctx.profile,
            ctx.model,
            docs,
            self.budget,
            max_tokens=pack_output_tokens(len(docs), self.budget, ctx.model),
        )
        caller = KimiCaller(ctx, None, shares={p.doc.sha256: _pack_tokens(p) for p, _a, _t in group})
        parts: dict[str, Summary | Exception]
        sent = True  # a request went out now (not refused before sending, not reused from the log)
        try:
            outcome = caller(request)
            sent = not outcome.reused
            if outcome.finish_reason == "length":
                cut = OutputInvalid("the packed answer was cut at max_tokens", outcome.content)
                parts = dict.fromkeys(labels, cut)
            else:
                parsed = parse_packed(outcome.content, list(labels))
                parts = {k: check_packed_part(v, _page_texts(labels[k][0]), k) for k, v in parsed.items()}
        except (BudgetExceeded, RunAborted) as err:
            sent, parts = False, dict.fromkeys(labels, err)  # alone, each then ends as it would have
        except KimiError as err:
            parts = dict.fromkeys(labels, err)
        except StoreError:
            raise
        except Exception as err:  # a bug: each document is read alone, where the error is its own
            parts = dict.fromkeys(labels, err)
        bad = [label for label, part in parts.items() if not isinstance(part, Summary)]
        if sent:
            self.counts = self.counts + PackCounts(len(group), 1, len(bad))
        return [
            self._part(p, attempt, t0, parts[label], caller.totals(p.doc.sha256))
            for label, (p, attempt, t0) in labels.items()
        ]

    def _part(
        self, p: Prepared, attempt: Attempt, t0: float, part: Summary | Exception, share: CallTotals
    ) -> DocumentOutcome:
        """One document of a sent pack: its part stored, or (unusable) the document read alone."""
        ctx = self.ctx
        if isinstance(part, Summary):
            result = _packed_result(p, part)
            return finished(ctx, guarded(ctx, attempt, lambda _a: store_result(ctx, p, result, share)), t0)
        ctx.observer.pack_part_failed(p.found.path, str(part))
        alone = self._alone(p, attempt, t0)
        return alone.with_totals(alone.totals + share)


def _page_texts(p: Prepared) -> dict[int, str]:
    return {page.number: page.text for page in p.doc.pages}


def _pack_tokens(p: Prepared) -> int:
    return PackedDocument(p.doc.sha256, p.plan.chunks[0].pieces).cost


def _packed_result(p: Prepared, summary: Summary) -> MapReduceResult:
    """A pack's part as if the document had been read alone in one call."""
    chunk = p.plan.chunks[0]
    return MapReduceResult(
        p.doc.sha256,
        summary,
        coverage=p.plan.coverage,
        pages_read=len(chunk.pages),
        pages_total=p.plan.pages_total,
        raw=summary_json(summary),
        calls=1,
    )
