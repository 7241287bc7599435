"""The tasks of a declared profile over one document, as a result kind of the sequencer (sequence.py).

The document is extracted and planned once (analysis.py, with the profile's planning profile). Every
task's requests are `[system: shared instructions][document or chunk][task instructions + schema]`,
so the tasks of one document share their prefix; the sequencer sends the first pending task alone when
the scheduler says the cache pays for the wait, then the others side by side.

Each task is map-reduced with its own answer model (`kimidocs.profiles`): `finish_reason: length`
splits, one repair call, reduce levels, the deterministic merge when a reduce stays unusable, and the
citation check on every cited field. A task's result goes to `task_results` the moment it is done;
a task that fails has its own `failures` row (its name in the message) and is the only one the next
run repeats: the work key is (doc, profile, task, task version, model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from extractors.document import Document
from kimidocs.core.mapreduce import AnswerKind, MapReduceResult
from kimidocs.core.records import CallTotals, DocumentStatus, FailureRecord, FailureStage
from kimidocs.profiles import (
    DeclaredProfile,
    TaskSpec,
    answer_json,
    check_answer_citations,
    merge_answers,
    parse_answer,
    trim_answer,
)
from kimidocs.run.context import DocumentOutcome, RunContext
from kimidocs.run.sequence import Job, JobDone, Prepared
from kimidocs.run.triage import triage
from kimidocs.store import TaskResultRow


def answers_for(task: TaskSpec) -> AnswerKind:
    """How map-reduce parses, checks, merges and renders the answers of `task`."""
    return AnswerKind(
        parse=lambda content, partial: parse_answer(task, content, partial=partial),
        check=check_answer_citations,
        merge=lambda answers: merge_answers(task, answers),
        dump=answer_json,
        trim=trim_answer,
    )


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How one task ended for one document: stored (`error_type` None) or failed, and why."""

    task: str
    error_type: str | None = None
    message: str | None = None
    pages_failed: int = 0
    citations_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.error_type is None


def pending_tasks(ctx: RunContext, declared: DeclaredProfile, doc_id: str) -> list[TaskSpec]:
    """The tasks without a finished result under their current version (all of them with --force)."""
    if ctx.options.force:
        return list(declared.tasks)
    return [
        t
        for t in declared.tasks
        if not ctx.store.has_task_result(
            doc_id, declared.name, t.name, declared.task_versions[t.name], ctx.model.id
        )
    ]


class TaskKind:
    """The sequencer's result kind for a declared profile: one job per pending task, each stored in
    `task_results`; the document is `failed` when a task failed (the next run repeats that task only)."""

    def __init__(self, declared: DeclaredProfile) -> None:
        self.declared = declared

    def pending(self, ctx: RunContext, doc_id: str) -> tuple[list[Job], list[str]]:
        pending = pending_tasks(ctx, self.declared, doc_id)
        reused = [t.name for t in self.declared.tasks if t not in pending]
        jobs = [Job(self.declared.task_profile(t.name), answers_for(t), t) for t in pending]
        return jobs, reused

    def store(self, ctx: RunContext, prepared: Prepared, done: JobDone) -> JobDone:
        task: TaskSpec = done.job.spec
        doc, path = prepared.doc, prepared.found.path
        if done.error is not None:
            stage, error_type, _status = triage(done.error, path)
            outcome = _task_failed(ctx, doc, path, task, stage, error_type, str(done.error))
        else:
            assert done.result is not None
            outcome = store_task(ctx, self.declared, doc, path, task, done.result)
        return replace(done, stored=outcome)

    def outcome(
        self, ctx: RunContext, prepared: Prepared, done: list[JobDone], reused: list[str]
    ) -> DocumentOutcome:
        outcomes: list[TaskOutcome] = [d.stored for d in done]
        totals = sum((d.totals for d in done), CallTotals())
        failed = [o for o in outcomes if not o.ok]
        message = describe(outcomes, reused)
        doc_id = prepared.doc.sha256
        if failed:
            error_type = failed[0].error_type if len(failed) == 1 else "TasksFailed"
            ctx.store.set_document_status(
                doc_id, "failed" if len(failed) == len(outcomes) else "partial", error_type, message
            )
            outcome = replace(
                prepared.base, status=DocumentStatus.FAILED, error_type=error_type, message=message
            )
        else:
            partial = any(o.pages_failed for o in outcomes)
            ctx.store.set_document_status(doc_id, "partial" if partial else "ok")
            outcome = replace(prepared.base, status=DocumentStatus.OK, title=message)
        return outcome.with_totals(totals)


def store_task(
    ctx: RunContext,
    declared: DeclaredProfile,
    doc: Document,
    path: str,
    task: TaskSpec,
    result: MapReduceResult,
) -> TaskOutcome:
    """Check the answer's citations against the document's pages and store it in `task_results`."""
    if result.answer is None:
        reason = "; ".join(result.errors) or "no answer produced"
        return _task_failed(ctx, doc, path, task, FailureStage.VALIDATE, "OutputInvalid", reason)
    pages = {p.number: p.text for p in doc.pages}
    answer, report = check_answer_citations(result.answer, pages, set(pages))
    for chunk in result.failed_chunks:
        _record(
            ctx,
            doc,
            path,
            FailureStage.CALL,
            "ChunkFailed",
            f"task {task.name}: pages {chunk.first_page}-{chunk.last_page}: {chunk.reason}",
        )
    pages_failed = len({p for chunk in result.failed_chunks for p in chunk.pages})
    ctx.store.save_task_result(
        TaskResultRow(
            doc_id=doc.sha256,
            profile=declared.name,
            profile_version=declared.version,
            task_version=declared.task_versions[task.name],
            model=ctx.model.id,
            run_id=ctx.run_id,
            backend=ctx.backend.name,
            spec=task,
            answer=answer,
            coverage=result.coverage,
            pages_total=len(doc.pages),
            pages_read=result.pages_read,
            created_at=datetime.now(UTC),
            raw=result.raw,
            pages_failed=pages_failed,
        )
    )
    dropped = report.pages_dropped + report.evidence_dropped
    return TaskOutcome(task.name, pages_failed=pages_failed, citations_dropped=dropped)


def describe(outcomes: list[TaskOutcome], reused: list[str]) -> str:
    """One line for the document's outcome: which tasks ran, which failed and why, which were reused."""
    parts = []
    done = [o.task for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        parts.append("tasks failed: " + ", ".join(f"{o.task} ({o.error_type}: {o.message})" for o in failed))
    if done:
        parts.append("tasks done: " + ", ".join(done))
    if reused:
        parts.append("unchanged: " + ", ".join(reused))
    return "; ".join(parts)


def _task_failed(
    ctx: RunContext,
    doc: Document,
    path: str,
    task: TaskSpec,
    stage: FailureStage,
    error_type: str,
    message: str,
) -> TaskOutcome:
    _record(ctx, doc, path, stage, error_type, f"task {task.name}: {message}")
    return TaskOutcome(task.name, error_type, message)


def _record(
    ctx: RunContext, doc: Document, path: str, stage: FailureStage, error_type: str, message: str
) -> None:
    ctx.store.record_failure(
        FailureRecord(
            ctx.run_id, path, stage, error_type, f"{path}: {message}", doc_id=doc.sha256, at=datetime.now(UTC)
        )
    )
