"""Records passed between stages and into the store: frozen, typed, no behaviour.

Only pydantic models (see `results.py`) hold untrusted model output; everything here is ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call as billed. `prompt_tokens` includes `cached_tokens`."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    @property
    def miss_tokens(self) -> int:
        return max(self.prompt_tokens - self.cached_tokens, 0)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One chat call as it happened: what was asked (by key), what it cost, how it ended.

    `response` keeps the model's raw text so a resumed run reuses finished calls by
    `request_key` instead of paying for them again, and so bad output can be debugged.
    """

    call_id: str
    run_id: str
    doc_id: str | None
    stage: str  # single | map | reduce | repair | pack
    request_key: str
    model: str
    backend: str  # "kimi" | "emulator"
    chunk_index: int | None = None
    level: int | None = None
    prompt_tokens_est: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 1
    finish_reason: str | None = None
    http_status: int | None = None
    status: str = "ok"  # ok | error | unusable (answered, but not usable: never reused)
    error: str | None = None
    response: str | None = None
    started_at: datetime | None = None
    usage_source: str | None = None  # reported (by the server) | estimated (it sent none) | None (no answer)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run over a folder (or a single document)."""

    run_id: str
    started_at: datetime
    folder: str
    profile: str
    model: str
    backend: str
    flow_run_id: str | None = None
    host: str | None = None  # the process that owns the run, to tell a crashed run from a live one
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class RunTotals:
    """What a run did, written when it ends."""

    status: str  # completed | failed | stopped | dry_run
    documents_ok: int = 0
    documents_skipped: int = 0
    documents_failed: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    message: str | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A path seen on disk and the document (sha256) it held at that time."""

    path: str
    doc_id: str
    size: int
    mtime: datetime


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """Anything that went wrong for one file or document, with a typed reason."""

    run_id: str
    path: str
    stage: str  # discover | extract | plan | call | validate | store
    error_type: str
    message: str
    doc_id: str | None = None
    at: datetime | None = None
