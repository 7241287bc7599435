"""Records passed between stages and into the store: frozen, typed, no behaviour.

Only pydantic models (see `results.py`) hold untrusted model output; everything here is ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class Stage(StrEnum):
    """What a chat call does (`calls.stage`)."""

    SINGLE = "single"  # the whole document in one call
    MAP = "map"  # one chunk of a map-reduce plan
    REDUCE = "reduce"  # partial results combined
    REPAIR = "repair"  # the one retry that shows the model its invalid answer
    PACK = "pack"  # several small documents in one call


class CallStatus(StrEnum):
    """How a call ended (`calls.status`)."""

    OK = "ok"
    ERROR = "error"  # no answer (HTTP or network error)
    UNUSABLE = "unusable"  # answered, but not usable: never reused
    INTERRUPTED = "interrupted"  # an attempt whose stream was cut after it began: billed, no answer


class DocumentStatus(StrEnum):
    """How one file ended in a run (`DocumentOutcome.status`)."""

    OK = "ok"
    UNCHANGED = "unchanged"  # already analysed with the same work key: nothing paid
    FAILED = "failed"
    SKIPPED = "skipped"  # not analysed: budget reached, run stopped, a batch still pending
    PLANNED = "planned"  # a dry run's plan and estimate


class RunStatus(StrEnum):
    """How a run ended (`runs.status`)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # ended by an exception
    STOPPED = "stopped"  # a problem every document would have had (wrong key, no quota)
    DRY_RUN = "dry_run"
    CRASHED = "crashed"  # its process died before it finished


class FailureStage(StrEnum):
    """Where a file's failure happened (`failures.stage`)."""

    DISCOVER = "discover"
    EXTRACT = "extract"
    PLAN = "plan"
    CALL = "call"
    VALIDATE = "validate"
    STORE = "store"
    PIPELINE = "pipeline"  # an unexpected error (a bug, an unforeseen file)


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
    stage: Stage
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
    status: CallStatus = CallStatus.OK
    error: str | None = None
    response: str | None = None
    started_at: datetime | None = None
    usage_source: str | None = None  # reported (by the server) | estimated (it sent none) | None (no answer)
    batch_id: str | None = None  # the Batch API job that answered it; None for a real-time call


@dataclass(frozen=True, slots=True)
class BatchRow:
    """A Batch API job a run submitted (`batches` table, keyed by its input file): enough for a rerun to
    pick it up. `batch_id` is None while the row is `pending` (written before the server's create)."""

    batch_id: str | None
    run_id: str
    folder: str
    model: str
    input_file_id: str
    round: int
    request_keys: tuple[str, ...]
    status: str
    estimate_usd: float | None = None


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

    status: RunStatus
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
    stage: FailureStage
    error_type: str
    message: str
    doc_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallTotals:
    """What a document's calls (or its share of a pack's) cost: calls, tokens, dollars."""

    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, usage: Usage, cost_usd: float) -> CallTotals:
        """These totals and one more call."""
        return replace(
            self,
            calls=self.calls + 1,
            prompt_tokens=self.prompt_tokens + usage.prompt_tokens,
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            completion_tokens=self.completion_tokens + usage.completion_tokens,
            cost_usd=self.cost_usd + cost_usd,
        )

    def __add__(self, other: CallTotals) -> CallTotals:
        return CallTotals(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.cached_tokens + other.cached_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )
