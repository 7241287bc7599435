"""`kimidocs ask FILE "question" ...` as a run: the pipeline over one file with `RunOptions.questions`
(kimidocs.run.questions answers them, each into `questions`), then the run's rows read back to print.

What is printed is what was stored: one `Answer` per question, in the order asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kimidocs.run import pipeline
from kimidocs.run.backend import Backend
from kimidocs.run.context import QUIET, DocumentOutcome, Observer, RunOptions, RunReport
from kimidocs.run.settings import ConfigError, Settings
from kimidocs.store import Store


@dataclass(frozen=True, slots=True)
class Answer:
    """One question's row of `questions`, as printed (`--json` keys are these fields)."""

    question: str
    answer: str | None
    pages: tuple[int, ...]
    evidence: str | None
    cost_usd: float
    calls: int
    prompt_tokens: int
    cached_tokens: int
    error: str | None

    def as_json(self, strategy: str | None) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "pages": list(self.pages),
            "evidence": self.evidence,
            "cost_usd": round(self.cost_usd, 6),
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "strategy": strategy,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class AskReport:
    """The run, the document's outcome (why it could not be read, if so) and the answers."""

    run: RunReport
    answers: tuple[Answer, ...]

    @property
    def outcome(self) -> DocumentOutcome:
        return self.run.outcomes[0]

    @property
    def failed(self) -> bool:
        return self.outcome.status != "ok" or any(a.error for a in self.answers)


def ask(
    path: str,
    questions: Sequence[str],
    options: RunOptions | None = None,
    settings: Settings | None = None,
    *,
    observer: Observer = QUIET,
    backend: Backend | None = None,
) -> AskReport:
    """Answer `questions` about the file at `path` in one run; `ConfigError` for a folder or a bad
    question (empty, too long)."""
    if Path(path).is_dir():
        raise ConfigError(f"{path}: ask reads one document, not a folder")
    options = replace(options or RunOptions(folder=path), folder=path, questions=tuple(questions))
    report = pipeline.run_folder(options, settings, observer=observer, backend=backend)
    store = Store(Path(report.db), read_only=True)
    try:
        rows = store.run_questions(report.run_id).rows
    finally:
        store.close()
    answers = tuple(
        Answer(q, a, tuple(pages or ()), ev, cost or 0.0, calls or 0, prompt or 0, cached or 0, err)
        for q, a, pages, ev, cost, calls, prompt, cached, err in rows
    )
    return AskReport(report, answers)
