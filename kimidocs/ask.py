"""`kimidocs ask FILE "question" ...`: free questions over one document, answered with page citations.

The questions are a declared profile built in code (`kimidocs.profiles.questions`): one task per
question, whose answer is one cited text field. The document is extracted, gated and planned once
(analysis.prepare, as for `analyze`); each question is run_plan with that task's answer kind, so a
long document is map-reduced when the planner says so. Requests are `[system][document][question]`:
the first question puts the document in the prefix cache, the others (and the next `ask` on the same
document) read it at the hit price. Every answer's citation is checked against the pages (a page that
does not exist is dropped; a quote not on its pages drops the answer), then appended to `questions`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kimidocs.analysis import Attempt, Prepared, guarded, prepare
from kimidocs.backend import Backend
from kimidocs.budget import BudgetExceeded
from kimidocs.caller import KimiCaller
from kimidocs.kimi.errors import KimiError
from kimidocs.mapreduce import fan_out, run_plan
from kimidocs.profiles import DeclaredProfile, TaskSpec, answer_json, check_answer_citations
from kimidocs.profiles.questions import ANSWER, question_profile
from kimidocs.records import CallTotals, DocumentStatus
from kimidocs.run import (
    QUIET,
    DocumentOutcome,
    Observer,
    RunAborted,
    RunContext,
    RunOptions,
    RunReport,
    abandon_run,
    close_run,
    list_files,
    open_run,
)
from kimidocs.settings import ConfigError, Settings
from kimidocs.store import QuestionRow, StoreError
from kimidocs.tasks import answers_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """One question's answer as stored and printed; `error` says why there is none."""

    question: str
    answer: str | None
    pages: tuple[int, ...]
    evidence: str | None
    cost_usd: float
    calls: int
    cached_tokens: int
    prompt_tokens: int
    strategy: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "pages": list(self.pages),
            "evidence": self.evidence,
            "cost_usd": round(self.cost_usd, 6),
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "strategy": self.strategy,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class AskReport:
    """The run that answered, the document's outcome (a failure to read it is there) and the answers."""

    run: RunReport
    outcome: DocumentOutcome
    answers: tuple[Answer, ...]

    @property
    def failed(self) -> bool:
        return self.outcome.status != DocumentStatus.OK or any(a.error for a in self.answers)


def ask(
    path: str,
    questions: Sequence[str],
    options: RunOptions | None = None,
    settings: Settings | None = None,
    *,
    observer: Observer = QUIET,
    backend: Backend | None = None,
) -> AskReport:
    """Answer `questions` over the file at `path` in one run; raises `ConfigError` for bad input."""
    declared = question_profile(questions)
    options = replace(options or RunOptions(folder=path), folder=path, profile=declared.name, pack=False)
    ctx = open_run(options, settings, observer=observer, backend=backend, built=declared)
    try:
        files = list_files(ctx)
        if len(files) != 1:
            raise ConfigError(f"{path}: ask takes one file, not a folder")
        attempt = Attempt(files[0])
        prepared = guarded(ctx, attempt, lambda a: prepare(ctx, a))
        if isinstance(prepared, DocumentOutcome):
            report = close_run(ctx, [prepared])
            return AskReport(report, prepared, ())
        answers, totals = answer_all(ctx, declared, questions, prepared)
        failed = [a for a in answers if a.error]
        outcome = replace(
            prepared.base,
            status=DocumentStatus.FAILED if failed else DocumentStatus.OK,
            error_type="QuestionsFailed" if failed else None,
            message="; ".join(f"{a.question}: {a.error}" for a in failed) or None,
        ).with_totals(totals)
    except BaseException as err:
        abandon_run(ctx, err)
        raise
    return AskReport(close_run(ctx, [outcome]), outcome, tuple(answers))


def answer_all(
    ctx: RunContext, declared: DeclaredProfile, questions: Sequence[str], prepared: Prepared
) -> tuple[list[Answer], CallTotals]:
    """Every question over the planned document: the first alone (it caches the document's prefix),
    the others side by side; each with its own caller, so each row carries its own cost."""
    concurrency = ctx.options.concurrency
    pairs = list(zip(declared.tasks, questions, strict=True))

    def one(pair: tuple[TaskSpec, str]) -> tuple[Answer, CallTotals]:
        task, question = pair
        caller = KimiCaller(ctx, prepared.doc.sha256, path=prepared.found.path)
        try:
            answer = answer_one(ctx, declared, task, question, prepared, caller)
        except (BudgetExceeded, RunAborted, StoreError):
            raise
        except KimiError as err:
            answer = _failed(question, caller.totals(), f"{type(err).__name__}: {err}")
        except Exception as err:  # a bug: this question fails, the others go on
            log.error("question %r failed", question, exc_info=err)
            answer = _failed(question, caller.totals(), f"{type(err).__name__}: {err}")
        return answer, caller.totals()

    first = one(pairs[0])
    rest = fan_out(pairs[1:], one, concurrency, first_alone=False)
    done = [first, *rest]
    totals = CallTotals()
    for _answer, t in done:
        totals = totals + t
    return [a for a, _t in done], totals


def answer_one(
    ctx: RunContext,
    declared: DeclaredProfile,
    task: TaskSpec,
    question: str,
    prepared: Prepared,
    caller: KimiCaller,
) -> Answer:
    """One question: map-reduce (or one call) as planned, citations checked, a `questions` row."""
    doc = prepared.doc
    result = run_plan(
        doc.sha256,
        prepared.plan,
        declared.task_profile(task.name),
        ctx.model,
        caller,
        concurrency=ctx.options.concurrency,
        document=doc,
        answers=answers_for(task),
        scheduler=ctx.scheduler,
    )
    error = None
    cited: dict[str, Any] | None = None
    if result.answer is None:
        error = "; ".join(result.errors) or "no answer produced"
    else:
        pages = {p.number: p.text for p in doc.pages}
        checked, report = check_answer_citations(result.answer, pages, set(pages))
        cited = json.loads(answer_json(checked)).get(ANSWER)
        if cited is None and report.evidence_dropped:
            error = "the answer's evidence is not on the pages it cites"
    totals = caller.totals()
    value = cited.get("value") if cited else None
    answer = Answer(
        question=question,
        answer=str(value) if value is not None else None,
        pages=tuple(cited.get("pages") or ()) if cited else (),
        evidence=cited.get("evidence") if cited else None,
        cost_usd=totals.cost_usd,
        calls=totals.calls,
        cached_tokens=totals.cached_tokens,
        prompt_tokens=totals.prompt_tokens,
        strategy=str(prepared.plan.strategy),
        error=error,
    )
    ctx.store.save_question(
        QuestionRow(
            doc_id=doc.sha256,
            question=question,
            answer=answer.answer,
            pages=answer.pages,
            evidence=answer.evidence,
            model=ctx.model.id,
            backend=ctx.backend.name,
            run_id=ctx.run_id,
            created_at=datetime.now(UTC),
            coverage=result.coverage,
            calls=totals.calls,
            prompt_tokens=totals.prompt_tokens,
            cached_tokens=totals.cached_tokens,
            cost_usd=totals.cost_usd,
        )
    )
    return answer


def _failed(question: str, totals: CallTotals, error: str) -> Answer:
    return Answer(
        question,
        None,
        (),
        None,
        totals.cost_usd,
        totals.calls,
        totals.cached_tokens,
        totals.prompt_tokens,
        error=error,
    )
