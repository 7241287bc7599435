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

import logging
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
from kimidocs import questions, tokens
from kimidocs.budget import BudgetExceeded
from kimidocs.caller import KimiCaller
from kimidocs.costs import CostEstimate, estimate_plan_cost
from kimidocs.discover import NOT_REGULAR_FILE, FoundFile
from kimidocs.kimi.errors import KimiError
from kimidocs.mapreduce import MapReduceResult, run_plan
from kimidocs.models import ModelInfo
from kimidocs.planning import Plan, PlanningError, budget_for, page_tokens_of, plan_document
from kimidocs.records import CallTotals, DocumentStatus, FailureRecord, FailureStage, FileRecord
from kimidocs.results import check_citations
from kimidocs.run import DocumentOutcome, RunAborted, RunContext
from kimidocs.settings import Settings
from kimidocs.store import StoreError, SummaryRow
from kimidocs.tasks import describe, pending_tasks, run_tasks
from prompts import Profile

log = logging.getLogger(__name__)

R = TypeVar("R")


class LowTextQuality(Exception):
    """The document's text failed the quality gate (almost no text, mostly empty pages, garbled):
    refused before any money is spent."""

    error_type = "LowTextQuality"


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document of a run extracted, stored and planned, about to be sent."""

    found: FoundFile
    doc: Document
    plan: Plan
    base: DocumentOutcome


@dataclass
class Attempt:
    """What is known of one file while it is analysed: enough to record any error it ends with."""

    found: FoundFile
    doc_id: str | None = None  # once hashed: the sha256 (of the bytes extracted, once extracted)
    caller: KimiCaller | None = field(default=None, repr=False)  # whose totals a failure still carries


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
        status = DocumentStatus.SKIPPED if found.error_type == NOT_REGULAR_FILE else DocumentStatus.FAILED
        return _fail(
            ctx, found, FailureStage.DISCOVER, found.error_type, f"{found.path}: {found.error}", status=status
        )
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
    ctx: RunContext, attempt: Attempt, prepared: Prepared, caller: KimiCaller | None = None
) -> DocumentOutcome:
    """The document's calls (one, or map-reduce), then its result stored. `caller`: batch mode's."""
    doc = prepared.doc
    caller = caller or KimiCaller(ctx, doc.sha256, path=prepared.found.path)
    attempt.caller = caller
    if ctx.options.questions:
        return answer_document(ctx, prepared)
    if ctx.declared is not None:
        return analyse_tasks(ctx, prepared, caller)
    result = run_plan(
        doc.sha256,
        prepared.plan,
        ctx.profile,
        ctx.model,
        caller,
        concurrency=ctx.options.concurrency,
        document=doc,
        scheduler=ctx.scheduler,
    )
    return store_result(ctx, prepared, result, caller.totals())


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
        document_status="ok" if not result.failed_chunks else "partial",
    )
    return replace(
        base,
        status=DocumentStatus.OK,
        coverage=result.coverage,
        title=summary.title or None,
        message=report.describe() if report.dropped else None,
    ).with_totals(totals)


def analyse_tasks(ctx: RunContext, prepared: Prepared, caller: KimiCaller) -> DocumentOutcome:
    """A declared profile's pending tasks over one planned document (kimidocs.tasks), each stored on
    its own; the outcome names the tasks that failed (the document is then `failed`, and the next
    run repeats those tasks only)."""
    declared = ctx.declared
    assert declared is not None
    doc, found, base = prepared.doc, prepared.found, prepared.base
    pending = pending_tasks(ctx, declared, doc.sha256)
    reused = [t.name for t in declared.tasks if t not in pending]
    outcomes = run_tasks(ctx, declared, doc, prepared.plan, found.path, caller, pending)
    failed = [o for o in outcomes if not o.ok]
    message = describe(outcomes, reused)
    if failed:
        status = DocumentStatus.FAILED
        error_type = failed[0].error_type if len(failed) == 1 else "TasksFailed"
        ctx.store.set_document_status(
            doc.sha256, "failed" if len(failed) == len(outcomes) else "partial", error_type, message
        )
        outcome = replace(base, status=status, error_type=error_type, message=message)
    else:
        partial = any(o.pages_failed for o in outcomes)
        ctx.store.set_document_status(doc.sha256, "partial" if partial else "ok")
        outcome = replace(base, status=DocumentStatus.OK, title=message)
    return outcome.with_totals(caller.totals())


def answer_document(ctx: RunContext, prepared: Prepared) -> DocumentOutcome:
    """The run's free questions over one planned document (kimidocs.questions), each its own
    `questions` row; the document is `failed` when a question got no answer."""
    doc = prepared.doc
    answered = questions.answer_questions(
        ctx, doc, prepared.plan, lambda: KimiCaller(ctx, doc.sha256, path=prepared.found.path)
    )
    totals = CallTotals()
    for a in answered:
        totals = totals + a.totals
    message = questions.describe(answered)
    if any(a.error for a in answered):
        outcome = replace(
            prepared.base, status=DocumentStatus.FAILED, error_type="QuestionsFailed", message=message
        )
    else:
        outcome = replace(prepared.base, status=DocumentStatus.OK, title=message)
    return outcome.with_totals(totals)


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
    """The one mapping from an exception raised for one file to its outcome and its `failures` row.

    ExtractionError   stage extract (unreadable file; a `failed` documents row once hashed)
    LowTextQuality    stage extract (the document row stays, marked failed)
    PlanningError     stage plan
    BudgetExceeded    stage call, `skipped` (the run's max_cost_usd)
    RunAborted        stage call (a wrong key, no quota: the run stops)
    KimiError         stage call, typed by the error's class
    anything else     stage pipeline: a bug or an unforeseen file, logged with its traceback;
                      never a reason to stop the batch
    """
    found, doc_id = attempt.found, attempt.doc_id
    if isinstance(err, ExtractionError):
        if doc_id is None:  # while hashing: type, size
            outcome = _fail(ctx, found, FailureStage.EXTRACT, err.error_type, str(err))
        else:
            ctx.store.save_failed_file(
                ctx.run_id, found.path, doc_id, found.size, found.mtime, err.error_type, str(err)
            )
            outcome = DocumentOutcome(
                found.path, DocumentStatus.FAILED, doc_id=doc_id, error_type=err.error_type, message=str(err)
            )
    elif isinstance(err, LowTextQuality):
        outcome = _fail(ctx, found, FailureStage.EXTRACT, err.error_type, str(err), doc_id)
    elif isinstance(err, PlanningError):
        outcome = _fail(ctx, found, FailureStage.PLAN, "PlanningError", f"{found.path}: {err}", doc_id)
    elif isinstance(err, BudgetExceeded):
        outcome = _fail(
            ctx, found, FailureStage.CALL, "BudgetExceeded", str(err), doc_id, status=DocumentStatus.SKIPPED
        )
    elif isinstance(err, RunAborted):
        outcome = _fail(ctx, found, FailureStage.CALL, "RunAborted", str(err), doc_id)
    elif isinstance(err, KimiError):
        outcome = _fail(ctx, found, FailureStage.CALL, type(err).__name__, str(err), doc_id)
    else:
        log.error("unexpected error on %s", found.path, exc_info=err)
        outcome = _fail(ctx, found, FailureStage.PIPELINE, type(err).__name__, f"{found.path}: {err}", doc_id)
    return outcome.with_totals(attempt.caller.totals()) if attempt.caller is not None else outcome


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
