"""Free questions over one planned document (`kimidocs ask`, the flow's `questions`): one task per
question (`kimidocs.profiles.questions`), each answered with run_plan and its task's answer kind, so a
long document is map-reduced when the planner says so.

Requests are `[system][document or chunk][question + schema]`: the first question goes alone and puts
the document in the prefix cache, the others (and a later ask about the same document) read it at the
hit price. Each question has its own caller, so its row carries its own calls, tokens and cost. Every
answer's citation is checked against the pages (pages that do not exist are dropped; a quote on none
of its pages drops the answer); every question gets a `questions` row, answered or not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from extractors.document import Document
from kimidocs.budget import BudgetExceeded
from kimidocs.caller import KimiCaller
from kimidocs.kimi.errors import KimiError
from kimidocs.mapreduce import MapReduceResult, fan_out
from kimidocs.planning import Plan
from kimidocs.profiles import TaskSpec, answer_json, check_answer_citations
from kimidocs.profiles.questions import ANSWER
from kimidocs.records import CallTotals
from kimidocs.run import RunAborted, RunContext
from kimidocs.store import QuestionRow, StoreError
from kimidocs.tasks import run_task

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answered:
    """How one question ended: answered, or `error` says why not; what its calls cost."""

    question_no: int
    error: str | None
    totals: CallTotals


def answer_questions(
    ctx: RunContext, doc: Document, plan: Plan, new_caller: Callable[[], KimiCaller]
) -> list[Answered]:
    """Every question of the run (`ctx.declared` built from `ctx.options.questions`) over `doc`."""
    declared = ctx.declared
    assert declared is not None and ctx.options.questions
    concurrency = ctx.options.concurrency
    numbered = list(enumerate(zip(declared.tasks, ctx.options.questions, strict=True), start=1))

    def one(item: tuple[int, tuple[TaskSpec, str]]) -> Answered:
        number, (task, question) = item
        caller = new_caller()
        result: MapReduceResult | None = None
        try:
            result = run_task(ctx, declared, task, doc, plan, caller, concurrency)
            cited, error = cited_answer(result, doc)
        except (BudgetExceeded, RunAborted, StoreError):
            raise
        except KimiError as err:
            cited, error = None, f"{type(err).__name__}: {err}"
        except Exception as err:  # a bug: this question fails, the others go on
            log.error("question %d of %s failed", number, doc.path, exc_info=err)
            cited, error = None, f"{type(err).__name__}: {err}"
        totals = caller.totals()
        save(ctx, doc, number, question, cited, error, totals, result.coverage if result else None)
        return Answered(number, error, totals)

    first = one(numbered[0])  # alone: its calls put the document's prefix in the cache
    return [first, *fan_out(numbered[1:], one, concurrency, first_alone=False)]


def cited_answer(result: MapReduceResult, doc: Document) -> tuple[dict[str, Any] | None, str | None]:
    """The answer's {value, pages, evidence} after the citation check, or why there is none."""
    if result.answer is None:
        return None, "; ".join(result.errors) or "no answer produced"
    pages = {p.number: p.text for p in doc.pages}
    checked, report = check_answer_citations(result.answer, pages, set(pages))
    cited = json.loads(answer_json(checked)).get(ANSWER)
    if cited is None:
        if report.evidence_dropped:
            return None, "the answer's quote is not on the pages it cites"
        return None, "the model gave no answer"
    return cited, None


def save(
    ctx: RunContext,
    doc: Document,
    number: int,
    question: str,
    cited: dict[str, Any] | None,
    error: str | None,
    totals: CallTotals,
    coverage: float | None,
) -> None:
    value = cited.get("value") if cited else None
    ctx.store.save_question(
        QuestionRow(
            doc_id=doc.sha256,
            question_no=number,
            question=question,
            answer=str(value) if value is not None else None,
            pages=tuple(int(p) for p in (cited or {}).get("pages") or ()),
            evidence=(cited or {}).get("evidence"),
            model=ctx.model.id,
            backend=ctx.backend.name,
            run_id=ctx.run_id,
            created_at=datetime.now(UTC),
            coverage=coverage,
            calls=totals.calls,
            prompt_tokens=totals.prompt_tokens,
            cached_tokens=totals.cached_tokens,
            cost_usd=totals.cost_usd,
            error=error,
        )
    )


def describe(answered: list[Answered]) -> str:
    """One line for the document's outcome."""
    failed = [a for a in answered if a.error]
    ok = len(answered) - len(failed)
    parts = [f"{ok} of {len(answered)} question(s) answered"]
    parts += [f"question {a.question_no}: {a.error}" for a in failed]
    return "; ".join(parts)
