"""The tasks of a declared profile over one document: one plan, one cached prefix, one result per task.

The document is extracted and planned once (analysis.py, with the profile's planning profile). Every
task's requests are `[system: shared instructions][document or chunk][task instructions + schema]`,
so the tasks of one document share their prefix. Scheduling (DESIGN §3 Call):

    single call   the first pending task's call goes alone (it puts system + document in the cache),
                  then the other tasks fan out and read the document at the hit price
    map-reduce    one map pass per task over the same chunks: the first task's pass puts every chunk
                  in the cache, then the others run side by side and read the chunks from it

Each task is map-reduced with its own answer model (`kimidocs.profiles`): `finish_reason: length`
splits, one repair call, reduce levels, the deterministic merge when a reduce stays unusable, and the
citation check on every cited field. A task's result goes to `task_results` the moment it is done;
a task that fails has its own `failures` row (its name in the message) and is the only one the next
run repeats: the work key is (doc, profile, task, task version, model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from extractors.document import Document
from kimidocs.budget import BudgetExceeded
from kimidocs.kimi.errors import KimiError
from kimidocs.mapreduce import AnswerKind, Call, MapReduceResult, fan_out, run_plan
from kimidocs.planning import Plan
from kimidocs.profiles import (
    DeclaredProfile,
    TaskSpec,
    answer_json,
    check_answer_citations,
    merge_answers,
    parse_answer,
    trim_answer,
)
from kimidocs.records import FailureRecord, FailureStage
from kimidocs.run import RunAborted, RunContext
from kimidocs.store import StoreError, TaskResultRow

log = logging.getLogger(__name__)


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


def run_task(
    ctx: RunContext,
    declared: DeclaredProfile,
    task: TaskSpec,
    doc: Document,
    plan: Plan,
    call: Call,
    concurrency: int,
) -> MapReduceResult:
    """One task over a planned document: its calls (single or map-reduce) on the shared prefix, its
    answers parsed, checked and merged by its own schema."""
    return run_plan(
        doc.sha256,
        plan,
        declared.task_profile(task.name),
        ctx.model,
        call,
        concurrency=concurrency,
        document=doc,
        answers=answers_for(task),
        scheduler=ctx.scheduler,
    )


def run_tasks(
    ctx: RunContext,
    declared: DeclaredProfile,
    doc: Document,
    plan: Plan,
    path: str,
    call: Call,
    tasks: list[TaskSpec],
) -> list[TaskOutcome]:
    """Every task of `tasks` over one planned document, each result stored as soon as it is done.

    A task's own failure (invalid output, an API error for its calls) is its outcome; what stops the
    document (budget, an aborted run, the store) is raised once running tasks end.
    """
    if not tasks:
        return []
    concurrency = ctx.options.concurrency

    def one(task: TaskSpec, share: int) -> TaskOutcome:
        try:
            result = run_task(ctx, declared, task, doc, plan, call, share)
        except (BudgetExceeded, RunAborted, StoreError):
            raise
        except KimiError as err:
            return _task_failed(ctx, doc, path, task, FailureStage.CALL, type(err).__name__, str(err))
        except Exception as err:  # a bug: this task fails, the others go on
            log.error("task %s of %s failed", task.name, path, exc_info=err)
            return _task_failed(ctx, doc, path, task, FailureStage.PIPELINE, type(err).__name__, str(err))
        return store_task(ctx, declared, doc, path, task, result)

    if not ctx.settings.prefix_scheduling:  # every task at once: they all miss the cache
        return fan_out(tasks, lambda t: one(t, concurrency), concurrency, first_alone=False)
    first, rest = tasks[0], tasks[1:]
    outcomes = [one(first, concurrency)]  # alone: its calls put the document's prefix in the cache
    share = max(1, concurrency // max(len(rest), 1))
    return outcomes + fan_out(rest, lambda t: one(t, share), concurrency, first_alone=False)


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
