"""Rows the store takes or returns that are not pipeline records (those are in kimidocs/core/records.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from kimidocs.core.results import Summary
from kimidocs.profiles.declaration import TaskSpec


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One validated result for the natural key (doc_id, profile, prompt_version, model).

    `raw` is the model's JSON as received (kept for debugging and for values the store could
    not coerce); `coverage` = pages_read / pages_total, so truncation is never silent.
    """

    doc_id: str
    profile: str
    prompt_version: str
    model: str
    run_id: str
    backend: str  # "kimi" | "emulator"
    summary: Summary
    coverage: float
    pages_total: int
    pages_read: int
    raw: str
    created_at: datetime
    pages_failed: int = 0  # pages of failed chunks: > 0 means the next run reads the document again


@dataclass(frozen=True, slots=True)
class TaskResultRow:
    """One validated answer of a declared profile's task, for the natural key
    (doc_id, profile, task, task_version, model). `spec` is the task's declaration: the store types
    the answer's values from it. `answer` is the validated pydantic answer (or its plain dict);
    `raw` the model's text (None: the answer's own JSON is kept as raw)."""

    doc_id: str
    profile: str
    profile_version: str
    task_version: str
    model: str
    run_id: str
    backend: str
    spec: TaskSpec
    answer: BaseModel | dict[str, Any]
    coverage: float
    pages_total: int
    pages_read: int
    created_at: datetime
    raw: str | None = None
    pages_failed: int = 0


@dataclass(frozen=True, slots=True)
class QuestionRow:
    """One question of `kimidocs ask` (appended: asking again adds a row); `question_no` from 1 in the
    order asked. `answer` is None when none survived (`error` says why: its evidence was not on the
    pages it cited, or its calls failed)."""

    doc_id: str
    question_no: int
    question: str
    answer: str | None
    pages: tuple[int, ...]
    evidence: str | None
    model: str
    backend: str
    run_id: str
    created_at: datetime
    coverage: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One page matching a full-text search, best first."""

    doc_id: str
    path: str | None
    page_no: int
    score: float
    snippet: str


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows of an ad-hoc read-only query."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
