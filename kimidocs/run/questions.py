"""Free questions over one planned document (`kimidocs ask`, the flow's `questions`), as a result kind of
the sequencer (sequence.py): one job per question (`kimidocs.profiles.questions`), each map-reduced when
the planner says so, through the run's caller (real time or the Batch API).

Requests are `[system][document or chunk][question + schema]`: when the scheduler says it pays, the first
question goes alone and puts the document in the prefix cache, the others (and a later ask about the same
document) read it at the hit price. Each question has its own caller, so its row carries its own calls,
tokens and cost. Every answer's citation is checked against the pages (pages that do not exist are
dropped; a quote on none of its pages drops the answer); every question gets a `questions` row, answered
or not, and one that got no answer a `failures` row too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from extractors.document import Document
from kimidocs.core.mapreduce import MapReduceResult
from kimidocs.core.records import CallTotals, DocumentStatus, FailureRecord, FailureStage
from kimidocs.profiles import DeclaredProfile, answer_json, check_answer_citations
from kimidocs.profiles.questions import ANSWER
from kimidocs.run.context import DocumentOutcome, RunContext
from kimidocs.run.sequence import Job, JobDone, Prepared
from kimidocs.run.tasks import answers_for
from kimidocs.run.triage import triage
from kimidocs.store import QuestionRow


@dataclass(frozen=True, slots=True)
class Answered:
    """How one question ended: answered, or `error` says why not; what its calls cost."""

    question_no: int
    error: str | None
    totals: CallTotals


class QuestionKind:
    """The sequencer's result kind for free questions: one job per question (each with its own caller, so
    its row carries its own calls and cost), a `questions` row for every one, answered or not, and a
    `failures` row for each that got no answer; the document is `failed` when a question did."""

    def __init__(self, declared: DeclaredProfile, questions: tuple[str, ...]) -> None:
        self.declared = declared
        self.questions = questions
        self.asked: dict[int, str | None] = {}  # by an earlier batch round of this run: number -> error

    def pending(self, ctx: RunContext, doc_id: str) -> tuple[list[Job], list[str]]:
        self.asked = ctx.store.questions_asked(doc_id, ctx.run_id)
        numbered = enumerate(zip(self.declared.tasks, self.questions, strict=True), start=1)
        jobs = [
            Job(self.declared.task_profile(t.name), answers_for(t), (n, q))
            for n, (t, q) in numbered
            if n not in self.asked
        ]
        return jobs, [f"question {n}" for n in sorted(self.asked)]

    def store(self, ctx: RunContext, prepared: Prepared, done: JobDone) -> JobDone:
        number, question = done.job.spec
        doc, path = prepared.doc, prepared.found.path
        cited: dict[str, Any] | None = None
        stage = FailureStage.VALIDATE
        if done.error is not None:
            stage, error_type, _status = triage(done.error, path)
            error: str | None = f"{error_type}: {done.error}"
        else:
            assert done.result is not None
            cited, error = cited_answer(done.result, doc)
        coverage = done.result.coverage if done.result else None
        save(ctx, doc, number, question, cited, error, done.totals, coverage)
        if error is not None:
            ctx.store.record_failure(
                FailureRecord(
                    ctx.run_id,
                    path,
                    stage,
                    "QuestionFailed",
                    f"{path}: question {number} ({question}): {error}",
                    doc_id=doc.sha256,
                    at=datetime.now(UTC),
                )
            )
        return replace(done, stored=Answered(number, error, done.totals))

    def outcome(
        self, ctx: RunContext, prepared: Prepared, done: list[JobDone], reused: list[str]
    ) -> DocumentOutcome:
        answered: list[Answered] = [d.stored for d in done]
        totals = sum((a.totals for a in answered), CallTotals())
        if (
            self.asked
        ):  # answered by an earlier batch round of this run (their cost is in that round's callers)
            answered += [Answered(n, e, CallTotals()) for n, e in self.asked.items()]
            answered.sort(key=lambda a: a.question_no)
        message = describe(answered)
        if any(a.error for a in answered):
            outcome = replace(
                prepared.base, status=DocumentStatus.FAILED, error_type="QuestionsFailed", message=message
            )
        else:
            outcome = replace(prepared.base, status=DocumentStatus.OK, title=message)
        return outcome.with_totals(totals)


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
