"""The one place that orders a prepared document's calls, for every kind of result and every caller.

    jobs       what the result kind still has to do for the document: the summary, a declared
               profile's pending tasks, or the run's questions (`ResultKind.pending`)
    order      the first job alone when the scheduler says its calls put a prefix in the cache that the
               others re-read (`Scheduler.group`: a batch scheduler never waits), then the rest side by
               side with the run's concurrency shared among them (never concurrency x jobs threads)
    each job   `run_plan` with a caller of its own (its calls, tokens and cost are its own), then stored
               by the kind (`ResultKind.store`)
    errors     `triage` (triage.py) for all of them: what stops the document (budget, an aborted run,
               the store, a batch still to come) goes up; a job's own failure (an API error for its
               calls, invalid output, a bug) is the job's outcome, recorded in `failures`

`Callers` says how calls go out: real time (`KimiCaller`) or through the run's batches (`BatchCaller`),
with the scheduler and concurrency of that mode; the run context is never changed for a mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extractors.document import Document
from kimidocs.core.budget import BudgetExceeded
from kimidocs.core.mapreduce import AnswerKind, MapReduceResult, fan_out, run_plan
from kimidocs.core.planning import Plan
from kimidocs.core.records import CallTotals
from kimidocs.core.schedule import Scheduler
from kimidocs.run.caller import KimiCaller
from kimidocs.run.context import DocumentOutcome, RunAborted, RunContext
from kimidocs.run.discover import FoundFile
from kimidocs.store import StoreError
from prompts import Profile

#: What stops a whole document (raised past its jobs): the run's budget, an aborted run, the store.
STOPS_DOCUMENT = (BudgetExceeded, RunAborted, StoreError)


class Deferred(BaseException):
    """A request is not answered yet: it goes into the round's batch (batchrun.py). A BaseException, so
    no `except Exception` turns it into a failure; the sequencer lets every job of the document gather
    its requests before it raises it, so one round holds them all."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document of a run extracted, stored and planned, about to be sent."""

    found: FoundFile
    doc: Document
    plan: Plan
    base: DocumentOutcome


@dataclass(frozen=True, slots=True)
class Job:
    """One result a document owes: the profile its requests are built from, how its answers are parsed
    and merged, and what the kind needs to store it (a task, a question)."""

    profile: Profile
    answers: AnswerKind
    spec: Any = None


@dataclass(frozen=True, slots=True)
class JobDone:
    """How one job ended: its map-reduce result, or the error that ended it; what its calls cost;
    `stored` is what the kind made of it (`ResultKind.store`)."""

    job: Job
    result: MapReduceResult | None
    error: Exception | None
    totals: CallTotals
    stored: Any = None


class ResultKind(Protocol):
    """A kind of result (summary, declared tasks, questions): which jobs are pending for a document, how
    one is stored (or its failure recorded), and the document's outcome from its jobs."""

    def pending(self, ctx: RunContext, doc_id: str) -> tuple[list[Job], list[str]]: ...
    def store(self, ctx: RunContext, prepared: Prepared, done: JobDone) -> JobDone: ...
    def outcome(
        self, ctx: RunContext, prepared: Prepared, done: list[JobDone], reused: list[str]
    ) -> DocumentOutcome: ...


@dataclass(frozen=True, slots=True)
class Callers:
    """How a document's calls go out: a new caller per job, the scheduler that decides waits, and the
    calls in flight for one document."""

    new: Callable[[str, str | None], KimiCaller]
    scheduler: Scheduler
    concurrency: int


def interactive(ctx: RunContext) -> Callers:
    """Real-time calls: the run's scheduler and concurrency."""
    return Callers(
        lambda doc_id, path: KimiCaller(ctx, doc_id, path=path), ctx.scheduler, ctx.options.concurrency
    )


def sequence(
    ctx: RunContext,
    prepared: Prepared,
    kind: ResultKind,
    callers: Callers,
    on_caller: Callable[[KimiCaller], None] = lambda _c: None,
) -> DocumentOutcome:
    """Every pending job of `kind` over one planned document, each stored the moment it is done; the
    document's outcome. `on_caller` hears each new caller (so a document stopped midway still carries
    what its calls cost)."""
    doc, plan = prepared.doc, prepared.plan
    jobs, reused = kind.pending(ctx, doc.sha256)
    concurrency = callers.concurrency
    shared = callers.scheduler.system_tokens + sum(c.tokens_est for c in plan.chunks)
    first_alone = (
        len(jobs) > 1
        and callers.scheduler.group(f"document {doc.sha256[:12]} jobs", len(jobs), shared).first_alone
    )

    def one(job: Job, share: int) -> JobDone:
        caller = callers.new(doc.sha256, prepared.found.path)
        on_caller(caller)
        try:
            result = run_plan(
                doc.sha256,
                plan,
                job.profile,
                ctx.model,
                caller,
                concurrency=share,
                document=doc,
                answers=job.answers,
                scheduler=callers.scheduler,
            )
        except STOPS_DOCUMENT:
            raise
        except Deferred:  # waits for a batch: the other jobs still gather theirs
            return JobDone(job, None, None, caller.totals(), stored=Deferred)
        except Exception as err:  # the job's own failure: the other jobs go on
            return kind.store(ctx, prepared, JobDone(job, None, err, caller.totals()))
        return kind.store(ctx, prepared, JobDone(job, result, None, caller.totals()))

    done: list[JobDone] = []
    rest = jobs
    if first_alone:  # its calls put the document's prefix in the cache for the others
        done.append(one(jobs[0], concurrency))
        rest = jobs[1:]
    share = max(1, concurrency // max(len(rest), 1))
    done += fan_out(rest, lambda job: one(job, share), min(concurrency, len(rest)), first_alone=False)
    if any(d.stored is Deferred for d in done):
        raise Deferred(doc.sha256)
    return kind.outcome(ctx, prepared, done, reused)
