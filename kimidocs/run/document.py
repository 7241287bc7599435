"""One document of a run: prepare it, summarise it, store the result, and the one place where an
exception becomes the document's outcome.

    prepare_file     extract -> count -> (store the document) -> quality gate -> plan; no store needed
    prepare_document the pure part of it: a Document -> counted, gated, planned (`kimidocs plan` uses it)
    prepare          a run's view: discover errors, hashing, the work key (unchanged?), dry run
    summarise        map-reduce calls through the run's `KimiCaller`
    store_result     citations checked against the document's pages, the summary stored
    guarded          runs any of the above for one file; `outcome_of` maps what it raises

`analyze_file` is the whole path for one file; the packer (`packer.py`) runs the same pieces on a batch.
Never raises for a bad file: only `StoreError` (the database itself is unusable) goes through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import extractors
from extractors.document import Document
from extractors.errors import ExtractionError
from extractors.limits import MiB
from kimidocs.core import tokens
from kimidocs.core.costs import CostEstimate, estimate_plan_cost
from kimidocs.core.mapreduce import SUMMARY_ANSWERS, MapReduceResult
from kimidocs.core.models import ModelInfo
from kimidocs.core.planning import Plan, budget_for, page_tokens_of, plan_document
from kimidocs.core.records import CallTotals, DocumentStatus, FailureRecord, FailureStage, FileRecord
from kimidocs.core.results import check_citations
from kimidocs.run.caller import KimiCaller
from kimidocs.run.context import DocumentOutcome, RunContext
from kimidocs.run.discover import FoundFile
from kimidocs.run.questions import QuestionKind
from kimidocs.run.sequence import Callers, Job, JobDone, Prepared, ResultKind, interactive, sequence
from kimidocs.run.settings import Settings
from kimidocs.run.tasks import TaskKind, pending_tasks
from kimidocs.run.triage import LowTextQuality, triage
from kimidocs.store import StoreError, SummaryRow
from prompts import Profile

R = TypeVar("R")


# ------------------------------------------------------------------------------------------------ prepare


def extraction_limits(settings: Settings) -> extractors.Limits:
    """The per-document bounds of `analyze`, `plan` and `extract` alike: bytes, pages, time, memory."""
    return extractors.Limits(
        max_bytes=settings.max_file_bytes,
        max_pages=settings.max_pages,
        timeout_s=settings.extract_timeout_s,
        memory_budget=settings.extract_memory_mb * MiB,
        timeout_hint="KIMIDOCS_EXTRACT_TIMEOUT_S",
        pdf_engine=settings.pdf_engine,
        memory_hint="KIMIDOCS_EXTRACT_MEMORY_MB",
    )


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A document counted, past the quality gate and planned: what a call would send and cost."""

    doc: Document
    page_tokens: tuple[int, ...]
    plan: Plan
    cost_usd_est: float
    estimate: CostEstimate | None = None  # calls, tokens, expected cache reads (all tasks)


Counted = Callable[[Document, tuple[int, ...]], None]


def prepare_document(
    doc: Document, model: ModelInfo, profile: Profile, *, on_counted: Counted | None = None, tasks: int = 1
) -> PreparedDocument:
    """Count, gate and plan `doc` for `model` and `profile`. Pure but for `on_counted`, called once the
    pages are counted and before the gate (a run stores the document there, refused or not).
    `tasks`: how many tasks of a declared profile the estimate covers (they share the prefix).

    Raises `LowTextQuality` or `PlanningError`.
    """
    page_tokens = tuple(tokens.count_many([p.text for p in doc.pages]))
    if on_counted is not None:
        on_counted(doc, page_tokens)
    gate = extractors.quality(doc)
    if not gate.ok:
        raise LowTextQuality(f"{doc.path}: {'; '.join(gate.reasons)}")
    plan = plan_document(page_tokens_of(doc, model, list(page_tokens)), budget_for(model, profile))
    estimate = estimate_plan_cost(plan, profile, model, tasks=tasks)
    return PreparedDocument(doc, page_tokens, plan, estimate.usd, estimate)


def prepare_file(
    path: str | Path,
    settings: Settings,
    model: ModelInfo,
    profile: Profile,
    *,
    on_counted: Counted | None = None,
    on_progress: extractors.Progress | None = None,
    tasks: int = 1,
) -> PreparedDocument:
    """Extract (within the settings' limits), count, gate and plan one file: what `analyze`, `--dry-run`
    and `kimidocs plan` all do before a call. Raises `ExtractionError`, `LowTextQuality`, `PlanningError`.
    `on_progress(pages_done, pages_total)` hears the extraction as pages finish.
    """
    doc = extractors.extract(
        path, limits=extraction_limits(settings), keep_images=model.images, on_progress=on_progress
    )
    return prepare_document(doc, model, profile, on_counted=on_counted, tasks=tasks)


@dataclass
class Attempt:
    """What is known of one file while it is analysed: enough to record any error it ends with."""

    found: FoundFile
    doc_id: str | None = None  # once hashed: the sha256 (of the bytes extracted, once extracted)
    callers: list[KimiCaller] = field(default_factory=list, repr=False)  # whose totals a failure carries

    def totals(self) -> CallTotals:
        """What the document's calls cost so far (every job's caller)."""
        return sum((c.totals() for c in self.callers), CallTotals())


def skipped_by_abort(ctx: RunContext, found: FoundFile) -> DocumentOutcome:
    """A file not started because the run stopped (a wrong key, no quota)."""
    return DocumentOutcome(
        found.path, DocumentStatus.SKIPPED, error_type="RunAborted", message=ctx.abort_reason
    )


def prepare(ctx: RunContext, attempt: Attempt) -> DocumentOutcome | Prepared:
    """Everything before the first call: the outcome when the document ends here, else its plan."""
    found = attempt.found
    if ctx.aborted.is_set():
        return skipped_by_abort(ctx, found)
    if found.error:
        # A FIFO or a device is recorded in `failures` like any file that cannot be read, and counted the
        # same way (runs.documents_failed), so the counts and the failures table agree (issue 22.6).
        return _fail(ctx, found, FailureStage.DISCOVER, found.error_type, f"{found.path}: {found.error}")
    # Type and size are checked before a byte is hashed: a FIFO or a 30 GB file ends here.
    doc_id = extractors.sha256_file(found.path, extraction_limits(ctx.settings))
    attempt.doc_id = doc_id
    file = FileRecord(found.path, doc_id, found.size, found.mtime)
    if not ctx.options.force and already_done(ctx, doc_id):
        # The same work key as a real run: a dry run says "unchanged, $0" where the run would pay nothing.
        if not ctx.options.dry_run:
            ctx.store.touch_file(file)
        return DocumentOutcome(found.path, DocumentStatus.UNCHANGED, doc_id=doc_id, cost_usd_est=0.0)

    def store_document(doc: Document, page_tokens: tuple[int, ...]) -> None:
        # The file may have changed since it was hashed: its row points at the bytes actually extracted.
        attempt.doc_id = doc.sha256
        extracted = replace(file, doc_id=doc.sha256, size=doc.size)
        ctx.store.save_document(doc, extracted, tokens_est=sum(page_tokens), page_tokens=page_tokens)

    def extracting(done: int, total: int) -> None:
        ctx.observer.extract_progress(found.path, done, total)

    # The estimate (a dry run's, the budget's view) covers the tasks still to do.
    tasks = len(pending_tasks(ctx, ctx.declared, doc_id)) if ctx.declared is not None else 1
    prepared = prepare_file(
        found.path,
        ctx.settings,
        ctx.model,
        ctx.profile,
        on_counted=store_document,
        on_progress=extracting,
        tasks=tasks,
    )
    doc, plan = prepared.doc, prepared.plan
    ctx.observer.document_planned(found.path, str(plan.strategy), plan.calls)
    base = DocumentOutcome(
        found.path,
        DocumentStatus.PLANNED,
        doc_id=doc_id,
        pages=len(doc.pages),
        strategy=plan.strategy,
        coverage=plan.coverage,
        cost_usd_est=prepared.cost_usd_est,
    )
    if ctx.options.dry_run:
        return base
    return Prepared(found, doc, plan, base)


def already_done(ctx: RunContext, doc_id: str) -> bool:
    """Whether the work key has a finished result: the summary's, or every task's of a declared
    profile (doc, profile, task, task version, model)."""
    if ctx.declared is not None:
        return not pending_tasks(ctx, ctx.declared, doc_id)
    return ctx.store.has_summary(doc_id, ctx.profile.name, ctx.profile.version, ctx.model.id)


# ---------------------------------------------------------------------------------------------- summarise


def summarise(
    ctx: RunContext, attempt: Attempt, prepared: Prepared, callers: Callers | None = None
) -> DocumentOutcome:
    """The document's calls and results through the one sequencer (sequence.py), for the run's kind of
    result (the summary, a declared profile's tasks, or the run's questions). `callers`: batch mode's,
    whose rounds replay the document: the outcome carries the calls of every round (`attempt.callers`)."""
    outcome = sequence(ctx, prepared, result_kind(ctx), callers or interactive(ctx), attempt.callers.append)
    return outcome.with_totals(attempt.totals())


def result_kind(ctx: RunContext) -> ResultKind:
    """What the run produces for each document."""
    if ctx.declared is not None and ctx.options.questions:
        return QuestionKind(ctx.declared, ctx.options.questions)
    if ctx.declared is not None:
        return TaskKind(ctx.declared)
    return SUMMARY


class SummaryKind:
    """The sequencer's result kind for the summary profile: one job, stored in `summaries`."""

    def pending(self, ctx: RunContext, doc_id: str) -> tuple[list[Job], list[str]]:
        return [Job(ctx.profile, SUMMARY_ANSWERS)], []

    def store(self, ctx: RunContext, prepared: Prepared, done: JobDone) -> JobDone:
        if done.error is not None:
            return replace(done, stored=failed(ctx, prepared.found, done.error, prepared.doc.sha256))
        assert done.result is not None
        return replace(done, stored=store_result(ctx, prepared, done.result, done.totals))

    def outcome(
        self, ctx: RunContext, prepared: Prepared, done: list[JobDone], reused: list[str]
    ) -> DocumentOutcome:
        (one,) = done
        outcome: DocumentOutcome = one.stored
        return outcome.with_totals(one.totals)


SUMMARY = SummaryKind()


def store_result(
    ctx: RunContext, prepared: Prepared, result: MapReduceResult, totals: CallTotals
) -> DocumentOutcome:
    """Check citations against the document's own pages and store its summary (alone or packed)."""
    found, doc, base = prepared.found, prepared.doc, prepared.base
    if result.summary is None:
        reason = "; ".join(result.errors) or "no summary produced"
        outcome = _fail(
            ctx, found, FailureStage.VALIDATE, "OutputInvalid", f"{found.path}: {reason}", doc.sha256
        )
        return outcome.with_totals(totals)
    pages = {p.number: p.text for p in doc.pages}
    summary, report = check_citations(result.summary, pages, set(pages))
    for chunk in result.failed_chunks:
        ctx.store.record_failure(
            FailureRecord(
                ctx.run_id,
                found.path,
                FailureStage.CALL,
                "ChunkFailed",
                f"{found.path}: pages {chunk.first_page}-{chunk.last_page}: {chunk.reason}",
                doc_id=doc.sha256,
                at=datetime.now(UTC),
            )
        )
    ctx.store.save_summary(
        SummaryRow(
            doc_id=doc.sha256,
            profile=ctx.profile.name,
            prompt_version=ctx.profile.version,
            model=ctx.model.id,
            run_id=ctx.run_id,
            backend=ctx.backend.name,
            summary=summary,
            coverage=result.coverage,
            pages_total=len(doc.pages),
            pages_read=result.pages_read,
            raw=result.raw,  # type: ignore[arg-type]
            created_at=datetime.now(UTC),
            pages_failed=len({p for chunk in result.failed_chunks for p in chunk.pages}),
        ),
        document_status="ok" if not result.failed_chunks else ("partial" if result.pages_read else "failed"),
    )
    if not result.pages_read:  # a summary of fragments: no page was read whole (issue 22.6)
        reasons = "; ".join(f"pages {c.first_page}-{c.last_page}: {c.reason}" for c in result.failed_chunks)
        message = f"{found.path}: no page was read whole ({reasons}); the next run reads them again"
        return replace(
            base, status=DocumentStatus.FAILED, error_type="NoPageRead", message=message
        ).with_totals(totals)
    return replace(
        base,
        status=DocumentStatus.OK,
        coverage=result.coverage,
        title=summary.title or None,
        message=report.describe() if report.dropped else None,
    ).with_totals(totals)


# -------------------------------------------------------------------------------- errors become outcomes


def guarded(ctx: RunContext, attempt: Attempt, work: Callable[[Attempt], R]) -> R | DocumentOutcome:
    """`work(attempt)`, or the outcome of the error it raised (`outcome_of`). Only a `StoreError` (the
    database itself is unusable: every document would fail) goes through, and stops the run."""
    try:
        return work(attempt)
    except StoreError:
        raise
    except Exception as err:
        return outcome_of(ctx, attempt, err)


def outcome_of(ctx: RunContext, attempt: Attempt, err: Exception) -> DocumentOutcome:
    """The outcome of the error raised for one file (`triage`), with what its calls cost so far."""
    return failed(ctx, attempt.found, err, attempt.doc_id).with_totals(attempt.totals())


def failed(ctx: RunContext, found: FoundFile, err: Exception, doc_id: str | None) -> DocumentOutcome:
    """The document's outcome and `failures` row for `err` (`triage`)."""
    stage, error_type, status = triage(err, found.path)
    if isinstance(err, ExtractionError) and doc_id is not None:
        ctx.store.save_failed_file(
            ctx.run_id, found.path, doc_id, found.size, found.mtime, error_type, str(err)
        )
        return DocumentOutcome(found.path, status, doc_id=doc_id, error_type=error_type, message=str(err))
    message = f"{found.path}: {err}" if stage in (FailureStage.PLAN, FailureStage.PIPELINE) else str(err)
    return _fail(ctx, found, stage, error_type, message, doc_id, status=status)


def _fail(
    ctx: RunContext,
    found: FoundFile,
    stage: FailureStage,
    error_type: str,
    message: str,
    doc_id: str | None = None,
    status: DocumentStatus = DocumentStatus.FAILED,
) -> DocumentOutcome:
    ctx.store.record_failure(
        FailureRecord(ctx.run_id, found.path, stage, error_type, message, doc_id=doc_id, at=datetime.now(UTC))
    )
    if doc_id:
        ctx.store.set_document_status(doc_id, status, error_type, message)
    return DocumentOutcome(found.path, status, doc_id=doc_id, error_type=error_type, message=message)


# ----------------------------------------------------------------------------------------------- one file


def started(ctx: RunContext, found: FoundFile) -> float:
    """Say a document starts; its start time, for `finished`."""
    ctx.observer.document_started(found.path)
    return time.perf_counter()


def finished(ctx: RunContext, outcome: DocumentOutcome, t0: float) -> DocumentOutcome:
    """The outcome with its duration, said to the observer."""
    outcome = replace(outcome, seconds=time.perf_counter() - t0)
    ctx.observer.document_finished(outcome)
    return outcome


def analyze_file(ctx: RunContext, found: FoundFile) -> DocumentOutcome:
    """One file end to end. Never raises for a bad file: the outcome says what happened."""
    t0 = started(ctx, found)
    return finished(ctx, guarded(ctx, Attempt(found), lambda a: _analyze(ctx, a)), t0)


def _analyze(ctx: RunContext, attempt: Attempt) -> DocumentOutcome:
    prepared = prepare(ctx, attempt)
    if isinstance(prepared, DocumentOutcome):
        return prepared
    return summarise(ctx, attempt, prepared)
