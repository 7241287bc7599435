"""One document end to end, and a folder of them, with no Prefect in sight.

    discover -> sha256 (unchanged? skip) -> extract -> store document -> quality gate
      -> plan -> map/reduce calls (each logged the moment it returns) -> citations -> store summary

`flows/` wraps `open_run` / `analyze_file` / `close_run` in Prefect tasks; `run_folder` is the
same thing with a thread pool, for `kimidocs analyze` without Prefect and for benchmarks. When
requests per minute bind (Tier0), both also pack small documents several to a request (`Packer`,
`packing.py`); each is still validated and stored on its own, as if it had been read alone.
State is written after success, never before: a call row exists only for a call that returned,
a summary only for a document that finished, so a crashed run resumes without re-paying.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import extractors
from extractors.document import Document
from extractors.errors import ExtractionError
from kimidocs import tokens
from kimidocs.backend import Backend, open_backend
from kimidocs.budget import BudgetExceeded, CostGuard
from kimidocs.costs import call_cost, estimate_plan_cost
from kimidocs.discover import NOT_REGULAR_FILE, FoundFile, discover
from kimidocs.kimi.errors import KimiError
from kimidocs.kimi.limits import Limiter, RateLimiter, RateLimits
from kimidocs.kimi.policy import apply_policy, should_stream
from kimidocs.mapreduce import CallOutcome, MapReduceResult, run_plan
from kimidocs.models import ModelInfo, UnknownModel, get_model
from kimidocs.packing import PackBuilder, is_small, pack_output_tokens, packing_pays, split_usage
from kimidocs.planning import SINGLE, Plan, budget_for, page_tokens_of, plan_document
from kimidocs.records import CallRecord, FailureRecord, FileRecord, RunRecord, RunTotals, Usage
from kimidocs.requests import ChatRequest, PackedDocument, pack_request
from kimidocs.results import (
    OutputInvalid,
    Summary,
    check_citations,
    check_packed_part,
    parse_packed,
    summary_json,
    unusable_reason,
)
from kimidocs.settings import ConfigError, Settings, check_db_path, load_settings
from kimidocs.store import RunLock, Store, StoreError, SummaryRow
from prompts import Profile, ProfileError, load_profile

log = logging.getLogger(__name__)

Observer = Callable[[str, dict], None]


def _quiet(event: str, data: dict) -> None:
    """Default observer: nothing on screen."""


class RunAborted(Exception):
    """A problem that would fail every remaining document (wrong key, no quota): stop the run."""


@dataclass
class PackStats:
    """What packing did in a run: documents sent in packs, pack requests, documents re-read alone."""

    documents: int = 0
    requests: int = 0
    retried_alone: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def requests_saved(self) -> int:
        """Requests not made compared with reading every packed document alone (negative if packing
        cost more: a pack whose answer was unusable is one request more than nothing)."""
        return self.documents - self.requests - self.retried_alone

    @property
    def extra_call_rows(self) -> int:
        """Call rows beyond one per request: a pack is logged once per document it carried."""
        return self.documents - self.requests


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a run does. The same fields are the Prefect flow's parameters."""

    folder: str
    profile: str = "summary"
    model: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_cost_usd: float | None = None
    dry_run: bool = False
    concurrency: int = 4
    force: bool = False
    db: str | None = None
    flow_run_id: str | None = None
    pack: bool | None = None  # small documents several to a request: None = only where RPM binds


@dataclass(frozen=True, slots=True)
class DocumentOutcome:
    """How one file ended in this run."""

    path: str
    status: str  # ok | unchanged | failed | skipped | planned
    doc_id: str | None = None
    error_type: str | None = None
    message: str | None = None
    pages: int = 0
    strategy: str | None = None
    coverage: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_usd_est: float | None = None
    seconds: float = 0.0
    title: str | None = None


@dataclass
class RunContext:
    """Everything the documents of one run share. Built by `open_run`, closed by `close_run`."""

    options: RunOptions
    settings: Settings
    store: Store
    backend: Backend
    model: ModelInfo
    profile: Profile
    run_id: str
    guard: CostGuard
    observer: Observer = _quiet
    aborted: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    packs: PackStats = field(default_factory=lambda: PackStats())
    run_lock: RunLock | None = None  # one analysing run per database file, released by close_run

    def abort(self, reason: str) -> None:
        self.abort_reason = self.abort_reason or reason
        self.aborted.set()


def open_run(
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = _quiet,
    limiter: Limiter | None = None,
    backend: Backend | None = None,
) -> RunContext:
    """Open the store (migrated), the backend and a `runs` row for a new run.

    Everything a user can get wrong (options, model, profile, database path, a model the account does
    not offer) is checked first and raised as one `ConfigError` line, before any `runs` row exists.
    Then it waits while another run holds the database's run lock (`RunLock`): two runs on one
    database would both pay for every document neither has finished.
    """
    settings = settings or load_settings()
    if options.db:
        settings = settings.model_copy(update={"db": Path(options.db)})
    check_options(options)
    check_db_path(settings.db)
    try:
        model = get_model(options.model or settings.kimi_model)
        profile = load_profile(options.profile)
    except (UnknownModel, ProfileError) as err:
        raise ConfigError(str(err)) from None
    run_id = uuid.uuid4().hex
    run_lock = _lock_database(settings.db, run_id, observer)
    opened: Backend | None = None
    try:
        store = Store(settings.db)
        store.migrate()
        opened = backend or open_backend(settings, limiter=limiter or RateLimiter.for_tier(settings.tier))
        if not options.dry_run:
            check_model_offered(opened, model.id)
    except BaseException:
        if opened is not None:
            opened.close()
        run_lock.release()
        raise
    backend = opened
    host = socket.gethostname()
    crashed = store.mark_crashed_runs(host, _pid_alive)
    store.start_run(
        RunRecord(
            run_id=run_id,
            started_at=datetime.now(UTC),
            folder=str(options.folder),
            profile=profile.name,
            model=model.id,
            backend=backend.name,
            flow_run_id=options.flow_run_id,
            host=host,
            pid=os.getpid(),
        )
    )
    ctx = RunContext(
        options, settings, store, backend, model, profile, run_id, CostGuard(options.max_cost_usd)
    )
    ctx.observer = observer
    ctx.run_lock = run_lock
    if crashed:
        log.warning("runs whose process died before finishing, now marked crashed: %s", ", ".join(crashed))
    observer(
        "run_started",
        {
            "run_id": run_id,
            "backend": backend.name,
            "emulated_here": backend.emulated_here,
            "base_url": backend.base_url,
            "model": model.id,
            "db": str(settings.db),
        },
    )
    return ctx


def check_options(options: RunOptions) -> None:
    """Refuse options that cannot work, in one line each (a negative budget would skip every file)."""
    if options.max_cost_usd is not None and not options.max_cost_usd >= 0:
        raise ConfigError(f"--max-cost-usd (max_cost_usd) must be 0 or more, not {options.max_cost_usd}")
    if not 1 <= options.concurrency <= 64:
        raise ConfigError(f"concurrency must be between 1 and 64, not {options.concurrency}")
    if not Path(options.folder).exists():
        raise ConfigError(f"{options.folder}: no such folder or file")


def check_model_offered(backend: Backend, model_id: str) -> None:
    """Once per run: is the model on the account's list (read when the backend opened)? A retired id
    would otherwise fail every document separately. When the list could not be read, the calls will say
    why."""
    ids = backend.offered
    if ids and model_id not in ids:
        raise ConfigError(
            f"model {model_id!r} is not offered at {backend.base_url} (retired, or not on this account); "
            f"the account offers: {', '.join(ids)}. Choose one with --model or KIMI_MODEL"
        )


def _lock_database(db: Path, run_id: str, observer: Observer) -> RunLock:
    """The database's run lock, taken for this run; waiting is said on the log and to the observer."""

    def waiting(message: str) -> None:
        log.info("%s", message)
        observer("run_waiting", {"message": message})  # the CLI says it on stderr, the flow in its log

    lock = RunLock(db)
    lock.acquire(f"run={run_id}", on_wait=waiting)
    return lock


def release_run(ctx: RunContext) -> None:
    """Give up a run that will not reach `close_run` (an exception): the backend and the run lock."""
    try:
        ctx.backend.close()
    finally:
        if ctx.run_lock is not None:
            ctx.run_lock.release()


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def list_files(ctx: RunContext) -> list[FoundFile]:
    """The run's candidate files; paths no longer present are marked deleted in `files`."""
    found = discover(ctx.options.folder, ctx.options.include or None, ctx.options.exclude or None)
    if Path(ctx.options.folder).is_dir():
        ctx.store.mark_deleted(str(Path(ctx.options.folder)), [f.path for f in found])
    return found


def analyze_file(ctx: RunContext, found: FoundFile) -> DocumentOutcome:
    """One file end to end. Never raises for a bad file: the outcome says what happened."""
    t0 = time.perf_counter()
    ctx.observer("document_started", {"path": found.path})
    try:
        outcome = _analyze(ctx, found)
    except StoreError:
        raise  # the database itself is unusable (locked, migration failed): every document would fail
    except Exception as err:  # a bug or an unforeseen file: record it, never stop the batch for one file
        log.exception("unexpected error on %s", found.path)
        outcome = _fail(ctx, found, "pipeline", type(err).__name__, f"{found.path}: {err}")
    outcome = replace(outcome, seconds=time.perf_counter() - t0)
    ctx.observer("document_finished", {"outcome": outcome})
    return outcome


def _fail(
    ctx: RunContext,
    found: FoundFile,
    stage: str,
    error_type: str,
    message: str,
    doc_id: str | None = None,
    status: str = "failed",
) -> DocumentOutcome:
    ctx.store.record_failure(
        FailureRecord(ctx.run_id, found.path, stage, error_type, message, doc_id=doc_id, at=datetime.now(UTC))
    )
    if doc_id:
        ctx.store.set_document_status(doc_id, status, error_type, message)
    return DocumentOutcome(found.path, status, doc_id=doc_id, error_type=error_type, message=message)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A document extracted, stored and planned, about to be sent."""

    found: FoundFile
    doc: Document
    plan: Plan
    base: DocumentOutcome


def _analyze(ctx: RunContext, found: FoundFile) -> DocumentOutcome:
    prepared = _prepare(ctx, found)
    if isinstance(prepared, DocumentOutcome):
        return prepared
    return _summarise(ctx, prepared.found, prepared.doc, prepared.plan, prepared.base)


def extraction_limits(settings: Settings) -> extractors.Limits:
    """The per-document bounds of `analyze` and `extract` alike: bytes, pages, time, memory."""
    return extractors.Limits(
        max_bytes=settings.max_file_bytes,
        max_pages=settings.max_pages,
        timeout_s=settings.extract_timeout_s,
        max_memory=settings.extract_max_memory_bytes,
        timeout_hint="KIMIDOCS_EXTRACT_TIMEOUT_S",
        pdf_engine=settings.pdf_engine,
    )


def _prepare(ctx: RunContext, found: FoundFile) -> DocumentOutcome | _Prepared:
    """Everything before the first call: the outcome when the document ends here, else its plan."""
    if ctx.aborted.is_set():
        return DocumentOutcome(found.path, "skipped", error_type="RunAborted", message=ctx.abort_reason)
    if found.error:
        status = "skipped" if found.error_type == NOT_REGULAR_FILE else "failed"
        return _fail(ctx, found, "discover", found.error_type, f"{found.path}: {found.error}", status=status)
    limits = extraction_limits(ctx.settings)
    try:  # type and size are checked before a byte is hashed: a FIFO or a 30 GB file ends here
        doc_id = extractors.sha256_file(found.path, limits)
    except ExtractionError as err:
        return _fail(ctx, found, "extract", err.error_type, str(err))
    file = FileRecord(found.path, doc_id, found.size, found.mtime)
    key = (doc_id, ctx.profile.name, ctx.profile.version, ctx.model.id)
    if not ctx.options.force and ctx.store.has_summary(*key):
        # The same work key as a real run: a dry run says "unchanged, $0" where the run would pay nothing.
        if not ctx.options.dry_run:
            ctx.store.touch_file(file)
        return DocumentOutcome(found.path, "unchanged", doc_id=doc_id, cost_usd_est=0.0)
    try:
        doc = extractors.extract(found.path, limits=limits, keep_images=ctx.model.images)
    except ExtractionError as err:
        ctx.store.save_failed_file(
            ctx.run_id, found.path, doc_id, found.size, found.mtime, err.error_type, str(err)
        )
        return DocumentOutcome(
            found.path, "failed", doc_id=doc_id, error_type=err.error_type, message=str(err)
        )
    # The file may have changed since it was hashed: its row points at the bytes actually extracted.
    file = replace(file, doc_id=doc.sha256, size=doc.size)
    page_tokens = tokens.count_many([p.text for p in doc.pages])
    ctx.store.save_document(doc, file, tokens_est=sum(page_tokens), page_tokens=page_tokens)
    gate = extractors.quality(doc)
    if not gate.ok:
        return _fail(
            ctx, found, "extract", "LowTextQuality", f"{found.path}: {'; '.join(gate.reasons)}", doc_id
        )
    plan = plan_document(page_tokens_of(doc, ctx.model, page_tokens), budget_for(ctx.model, ctx.profile))
    estimate = estimate_plan_cost(plan, ctx.profile, ctx.model)
    base = DocumentOutcome(
        found.path,
        "planned",
        doc_id=doc_id,
        pages=len(doc.pages),
        strategy=plan.strategy,
        coverage=plan.coverage,
        cost_usd_est=estimate.usd,
    )
    if ctx.options.dry_run:
        return base
    return _Prepared(found, doc, plan, base)


def _summarise(
    ctx: RunContext, found: FoundFile, doc: Document, plan: Plan, base: DocumentOutcome
) -> DocumentOutcome:
    caller = KimiCaller(ctx, doc.sha256)
    try:
        result = run_plan(
            doc.sha256,
            plan,
            ctx.profile,
            ctx.model,
            caller,
            concurrency=ctx.options.concurrency,
            document=doc,
        )
    except BudgetExceeded as err:
        out = _fail(ctx, found, "call", "BudgetExceeded", str(err), doc.sha256, status="skipped")
        return replace(out, status="skipped", **caller.totals())
    except RunAborted as err:
        return replace(_fail(ctx, found, "call", "RunAborted", str(err), doc.sha256), **caller.totals())
    except KimiError as err:
        return replace(_fail(ctx, found, "call", type(err).__name__, str(err), doc.sha256), **caller.totals())
    return _store_result(ctx, found, doc, result, base, caller.totals())


def _store_result(
    ctx: RunContext,
    found: FoundFile,
    doc: Document,
    result: MapReduceResult,
    base: DocumentOutcome,
    totals: dict,
) -> DocumentOutcome:
    """Check citations against the document's own pages and store its summary (alone or packed)."""
    if result.summary is None:
        reason = "; ".join(result.errors) or "no summary produced"
        return replace(
            _fail(ctx, found, "validate", "OutputInvalid", f"{found.path}: {reason}", doc.sha256),
            **totals,
        )
    pages = {p.number: p.text for p in doc.pages}
    summary, report = check_citations(result.summary, pages, set(pages))
    for chunk in result.failed_chunks:
        ctx.store.record_failure(
            FailureRecord(
                ctx.run_id,
                found.path,
                "call",
                "ChunkFailed",
                f"{found.path}: pages {chunk.first_page}-{chunk.last_page}: {chunk.reason}",
                doc_id=doc.sha256,
                at=datetime.now(UTC),
            )
        )
    ctx.store.save_summary(
        SummaryRow(
            doc_id=doc.sha256,
            profile=ctx.profile.name,
            prompt_version=ctx.profile.version,
            model=ctx.model.id,
            run_id=ctx.run_id,
            backend=ctx.backend.name,
            summary=summary,
            coverage=result.coverage,
            pages_total=len(doc.pages),
            pages_read=result.pages_read,
            raw=result.raw,
            created_at=datetime.now(UTC),
            pages_failed=len({p for chunk in result.failed_chunks for p in chunk.pages}),
        ),
        document_status="ok" if not result.failed_chunks else "partial",
    )
    return replace(
        base,
        status="ok",
        coverage=result.coverage,
        title=summary.title or None,
        **totals,
        message=report.describe() if report.dropped else None,
    )


def _reusable(prior: CallRecord) -> bool:
    """A logged call whose answer can stand in for a new one (rows logged `ok` before `unusable`
    existed are checked again here)."""
    if prior.response is None:
        return False
    return unusable_reason(prior.stage, prior.response, prior.finish_reason) is None


class KimiCaller:
    """The `call` that map-reduce uses: resume by request key, budget, policy, client, call log.

    A packed request (`shares`: doc_id -> weight, its rendered tokens) is logged once per document it
    carried: same request key and response, that document's share of the tokens and the cost, so
    per-document costs stay right. `totals(doc_id)` is one document's share.
    """

    def __init__(self, ctx: RunContext, doc_id: str | None, *, shares: dict[str, int] | None = None) -> None:
        self.ctx = ctx
        self.doc_id = doc_id
        self.shares = shares
        self._lock = threading.Lock()
        self._totals: dict[str | None, list] = {}  # doc_id -> [calls, prompt, cached, completion, cost]

    def totals(self, doc_id: str | None = None) -> dict:
        key = doc_id if self.shares else self.doc_id
        with self._lock:
            calls, prompt, cached, completion, cost = self._totals.get(key, [0, 0, 0, 0, 0.0])
        return {
            "calls": calls,
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "completion_tokens": completion,
            "cost_usd": cost,
        }

    def _add(self, doc_id: str | None, usage: Usage, cost: float) -> None:
        with self._lock:
            t = self._totals.setdefault(doc_id, [0, 0, 0, 0, 0.0])
            t[0] += 1
            t[1] += usage.prompt_tokens
            t[2] += usage.cached_tokens
            t[3] += usage.completion_tokens
            t[4] += cost

    def _per_document(self, record: CallRecord, usage: Usage) -> list[tuple[CallRecord, Usage, float]]:
        """The call's log rows: one, or one per document of a pack with its share of the usage."""
        if not self.shares:
            return [(record, usage, call_cost(usage, self.ctx.model))]
        ids = list(self.shares)
        parts = split_usage(usage, [self.shares[i] for i in ids])
        return [
            (
                replace(record, call_id=uuid.uuid4().hex, doc_id=doc_id, chunk_index=i),
                part,
                call_cost(part, self.ctx.model),
            )
            for i, (doc_id, part) in enumerate(zip(ids, parts, strict=True))
        ]

    def __call__(self, request: ChatRequest) -> CallOutcome:
        ctx = self.ctx
        if ctx.aborted.is_set():
            raise RunAborted(ctx.abort_reason or "run aborted")
        # Resume: a call that already returned (same request key) is not paid again -- unless
        # the user asked for a fresh analysis with --force.
        prior = None if ctx.options.force else ctx.store.find_completed_call(request.request_key)
        if prior is not None and _reusable(prior):
            ctx.observer("call_reused", {"request_key": request.request_key})
            return CallOutcome(content=prior.response, finish_reason=prior.finish_reason, reused=True)
        max_tokens = int(request.body.get("max_tokens") or 0)
        estimate = ctx.model.price_cache_miss * request.prompt_tokens_est / 1e6 + ctx.model.price_output * (
            max_tokens / 1e6
        )
        started = datetime.now(UTC)
        body = self._policy_body(request, max_tokens)
        record = CallRecord(
            call_id=uuid.uuid4().hex,
            run_id=ctx.run_id,
            doc_id=self.doc_id,
            stage=request.stage,
            request_key=request.request_key,
            model=ctx.model.id,
            backend=ctx.backend.name,
            chunk_index=request.chunk_index,
            level=request.level,
            prompt_tokens_est=request.prompt_tokens_est,
            started_at=started,
        )
        ctx.guard.reserve(estimate)
        try:
            result = ctx.backend.client.chat(
                body,
                stream=should_stream(request.prompt_tokens_est, max_tokens),
                tokens_est=request.prompt_tokens_est + max_tokens,
            )
        except KimiError as err:
            ctx.guard.settle(estimate, 0.0)
            failed = replace(
                record,
                status="error",
                error=str(err),
                http_status=getattr(err, "status", None),
                attempts=getattr(err, "attempts", 1) or 1,
            )
            ctx.store.save_calls([row for row, _u, _c in self._per_document(failed, Usage())])
            if getattr(err, "fatal_for_run", False):
                ctx.abort(str(err))
                raise RunAborted(str(err)) from err
            raise
        usage, usage_source = result.usage, "reported"
        if not result.usage_reported:  # never a silent zero: our own count, flagged, for budget and log
            usage, usage_source = estimated_usage(request, result.content), "estimated"
            log.warning("%s: the server reported no token usage; storing our estimate", request.request_key)
        cost = call_cost(usage, ctx.model)
        ctx.guard.settle(estimate, cost)
        unusable = unusable_reason(request.stage, result.content, result.finish_reason)
        done = replace(
            record,
            usage_source=usage_source,
            status="unusable" if unusable else "ok",
            error=unusable,
            latency_ms=result.latency_ms,
            ttft_ms=result.ttft_ms,
            attempts=result.attempts,
            finish_reason=result.finish_reason,
            http_status=result.http_status,
            response=result.content,
        )
        rows = self._per_document(done, usage)
        ctx.store.save_calls([replace(row, usage=part, cost_usd=c) for row, part, c in rows])
        for row, part, c in rows:
            self._add(row.doc_id, part, c)
        ctx.observer("call_finished", {"usage": usage, "cost_usd": cost, "stage": request.stage})
        return CallOutcome(content=result.content, finish_reason=result.finish_reason)

    def _policy_body(self, request: ChatRequest, max_tokens: int) -> dict:
        """The body as the model wants it; near the window, Kimi's exact count decides.

        Our o200k count is an estimate: when it is within the safety margin of the window, ask
        `estimate-token-count` and refuse (ContextLengthExceeded, typed) instead of paying for a 400.
        """
        model = self.ctx.model
        if tokens.with_margin(request.prompt_tokens_est) + max_tokens <= model.window:
            return apply_policy(request.body, model)
        exact = self.ctx.backend.client.estimate_tokens(model.id, request.body["messages"])
        self.ctx.observer("exact_count", {"estimate": request.prompt_tokens_est, "exact": exact})
        return apply_policy(request.body, model, prompt_tokens=exact)


def estimated_usage(request: ChatRequest, content: str | None) -> Usage:
    """Usage when the server reported none: the prompt estimate, no cache hit, the answer counted."""
    return Usage(prompt_tokens=request.prompt_tokens_est, completion_tokens=tokens.count(content or ""))


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did, for the CLI table, the Prefect artifact and the exit status."""

    run_id: str
    backend: str
    model: str
    db: str
    outcomes: tuple[DocumentOutcome, ...]
    status: str
    message: str | None = None
    seconds: float = 0.0
    packed_requests_saved: int = 0

    def count(self, *statuses: str) -> int:
        return sum(1 for o in self.outcomes if o.status in statuses)

    @property
    def cost_usd(self) -> float:
        return sum(o.cost_usd for o in self.outcomes)

    @property
    def cost_usd_est(self) -> float:
        return sum(o.cost_usd_est or 0.0 for o in self.outcomes)

    @property
    def prompt_tokens(self) -> int:
        return sum(o.prompt_tokens for o in self.outcomes)

    @property
    def cached_tokens(self) -> int:
        return sum(o.cached_tokens for o in self.outcomes)

    @property
    def cache_hit_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0 or self.status == "failed"


def close_run(ctx: RunContext, outcomes: Iterable[DocumentOutcome]) -> RunReport:
    """Write the run's totals, refresh the search index, close the backend."""
    outs = tuple(outcomes)
    status = "dry_run" if ctx.options.dry_run else ("stopped" if ctx.aborted.is_set() else "completed")
    report = RunReport(
        ctx.run_id,
        ctx.backend.name,
        ctx.model.id,
        str(ctx.settings.db.resolve()),
        outs,
        status,
        ctx.abort_reason,
        time.perf_counter() - ctx.started,
        ctx.packs.requests_saved,
    )
    ctx.store.finish_run(
        ctx.run_id,
        RunTotals(
            status=status,
            documents_ok=report.count("ok", "unchanged"),
            documents_skipped=report.count("skipped"),
            documents_failed=report.count("failed"),
            calls=sum(o.calls for o in outs) - ctx.packs.extra_call_rows,
            prompt_tokens=report.prompt_tokens,
            cached_tokens=report.cached_tokens,
            completion_tokens=sum(o.completion_tokens for o in outs),
            cost_usd=report.cost_usd,
            message=ctx.abort_reason,
        ),
    )
    if any(o.status == "ok" for o in outs):
        ctx.store.refresh_search_index()
    ctx.store.close()  # release the file now so analysts and the next run get in at once
    release_run(ctx)
    ctx.observer("run_finished", {"report": report})
    return report


def run_folder(
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = _quiet,
    backend: Backend | None = None,
) -> RunReport:
    """Analyse a folder without Prefect: documents in a thread pool, calls limited per account."""
    ctx = open_run(options, settings, observer=observer, backend=backend)
    try:
        files = list_files(ctx)
        observer("files_found", {"count": len(files)})
        workers = max(1, min(options.concurrency, len(files) or 1))
        packer = packer_for(ctx)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kimidocs-doc") as pool:
            batches = list(pool.map(lambda f: analyze_in_folder(ctx, packer, f), files))
        if packer is not None:
            batches.append(packer.flush())
        outcomes = in_file_order(files, batches)
    except BaseException as err:
        abandon_run(ctx, err)
        raise
    return close_run(ctx, outcomes)


def abandon_run(ctx: RunContext, error: BaseException) -> None:
    """A run that ends by an exception is closed as `failed` with the reason, never left `running`."""
    try:
        ctx.store.finish_run(
            ctx.run_id, RunTotals(status="failed", message=f"{type(error).__name__}: {error}")
        )
    except StoreError as store_error:  # the database itself is what failed: say so, keep the first error
        log.error("could not mark run %s failed: %s", ctx.run_id, store_error)
    finally:
        ctx.store.close()
        release_run(ctx)


# ---------------------------------------------------------------------------------------------- packing


def _account_limits(ctx: RunContext) -> RateLimits | None:
    """The limits the client's limiter enforces, else the configured tier's."""
    limits = getattr(ctx.backend.client.limiter, "limits", None)
    if isinstance(limits, RateLimits):
        return limits
    try:
        return RateLimits.for_tier(ctx.settings.tier)
    except ValueError:
        return None


def _packing_on(ctx: RunContext) -> bool:
    """`pack` as asked; by default only where RPM binds for a typical small document read alone."""
    if ctx.options.dry_run or ctx.options.pack is False:
        return False
    if ctx.options.pack:
        return True
    budget = budget_for(ctx.model, ctx.profile)
    typical = budget.fixed_prompt_tokens + 2_000 + budget.max_output_tokens  # a ~2,000-token document
    return packing_pays(_account_limits(ctx), typical)


def packer_for(ctx: RunContext) -> Packer | None:
    """The run's packer when packing is on (`RunOptions.pack`, else where RPM binds), else None."""
    return Packer(ctx) if _packing_on(ctx) else None


def analyze_in_folder(ctx: RunContext, packer: Packer | None, found: FoundFile) -> list[DocumentOutcome]:
    """One file of a folder run: its outcome, or with packing the outcomes of the pack it
    completed (none while its pack waits; `Packer.flush` sends the last one)."""
    return packer.analyze(found) if packer is not None else [analyze_file(ctx, found)]


def in_file_order(files: list[FoundFile], batches: Iterable[list[DocumentOutcome]]) -> list[DocumentOutcome]:
    """The outcomes of `analyze_in_folder` (and the final flush), one per file, in `files`' order."""
    done = {o.path: o for batch in batches for o in batch}
    return [done[f.path] for f in files]


class Packer:
    """Packing for a folder: small single-call documents wait in a `PackBuilder`; a full group goes
    out as one request from the worker that filled it, the rest (large, scanned) are read alone.
    `analyze` may return the outcomes of other documents (those of the pack it sent) or none;
    `flush` sends what still waits, once every file went through `analyze`."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.budget = budget_for(ctx.model, ctx.profile)
        self.builder: PackBuilder[tuple[_Prepared, float]] = PackBuilder(
            lambda item: _pack_tokens(item[0]), self.budget, ctx.model
        )

    def analyze(self, found: FoundFile) -> list[DocumentOutcome]:
        """One file: its outcome now, or (packable) none until its pack is sent."""
        t0 = time.perf_counter()
        self.ctx.observer("document_started", {"path": found.path})
        prepared = _prepare(self.ctx, found)
        if isinstance(prepared, DocumentOutcome):
            return [self._finish(prepared, t0)]
        if not self._packable(prepared):
            return [self._finish(_summarise(self.ctx, found, prepared.doc, prepared.plan, prepared.base), t0)]
        group = self.builder.add((prepared, t0))
        return self._send(group) if group else []

    def flush(self) -> list[DocumentOutcome]:
        """Send the documents still waiting (the last, partly filled pack)."""
        return self._send(self.builder.flush())

    def _finish(self, outcome: DocumentOutcome, t0: float) -> DocumentOutcome:
        outcome = replace(outcome, seconds=time.perf_counter() - t0)
        self.ctx.observer("document_finished", {"outcome": outcome})
        return outcome

    def _packable(self, p: _Prepared) -> bool:
        plan = p.plan
        return (
            plan.strategy == SINGLE
            and not plan.skipped_pages
            and not any(piece.images for piece in plan.chunks[0].pieces)
            and is_small(_pack_tokens(p), self.budget)
        )

    def _alone(self, p: _Prepared, t0: float) -> DocumentOutcome:
        return self._finish(_summarise(self.ctx, p.found, p.doc, p.plan, p.base), t0)

    def _send(self, group: tuple[tuple[_Prepared, float], ...]) -> list[DocumentOutcome]:
        """One pack request; each document's part validated and stored alone, a bad part re-read alone."""
        if len(group) <= 1:
            return [self._alone(p, t0) for p, t0 in group]
        ctx = self.ctx
        labels = {f"D{i + 1}": p for i, (p, _t0) in enumerate(group)}  # short ids: cheap, hard to garble
        docs = [PackedDocument(label, p.plan.chunks[0].pieces) for label, p in labels.items()]
        request = pack_request(
            ctx.profile,
            ctx.model,
            docs,
            self.budget,
            max_tokens=pack_output_tokens(len(docs), self.budget, ctx.model),
        )
        caller = KimiCaller(ctx, None, shares={p.doc.sha256: _pack_tokens(p) for p in labels.values()})
        parts: dict[str, Summary | Exception]
        sent = True  # a request went out now (not refused before sending, not reused from the log)
        try:
            outcome = caller(request)
            sent = not outcome.reused
            if outcome.finish_reason == "length":
                cut = OutputInvalid("the packed answer was cut at max_tokens", outcome.content)
                parts = dict.fromkeys(labels, cut)
            else:
                parsed = parse_packed(outcome.content, list(labels))
                parts = {k: check_packed_part(v, _page_texts(labels[k]), k) for k, v in parsed.items()}
        except (BudgetExceeded, RunAborted) as err:
            sent, parts = False, dict.fromkeys(labels, err)  # alone, each then ends as it would have
        except KimiError as err:
            parts = dict.fromkeys(labels, err)
        bad = [label for label, part in parts.items() if not isinstance(part, Summary)]
        if sent:
            with ctx.packs.lock:
                ctx.packs.documents += len(group)
                ctx.packs.requests += 1
                ctx.packs.retried_alone += len(bad)
        out = []
        for (label, p), (_p, t0) in zip(labels.items(), group, strict=True):
            part, share = parts[label], caller.totals(p.doc.sha256)
            if isinstance(part, Summary):
                result = _packed_result(p, part)
                out.append(self._finish(_store_result(ctx, p.found, p.doc, result, p.base, share), t0))
                continue
            ctx.observer("pack_part_failed", {"path": p.found.path, "reason": str(part)})
            alone = self._alone(p, t0)
            out.append(replace(alone, **{k: getattr(alone, k) + v for k, v in share.items()}))
        return out


def _page_texts(p: _Prepared) -> dict[int, str]:
    return {page.number: page.text for page in p.doc.pages}


def _pack_tokens(p: _Prepared) -> int:
    return PackedDocument(p.doc.sha256, p.plan.chunks[0].pieces).cost


def _packed_result(p: _Prepared, summary: Summary) -> MapReduceResult:
    """A pack's part as if the document had been read alone in one call."""
    chunk = p.plan.chunks[0]
    return MapReduceResult(
        p.doc.sha256,
        summary,
        coverage=p.plan.coverage,
        pages_read=len(chunk.pages),
        pages_total=p.plan.pages_total,
        raw=summary_json(summary),
        calls=1,
    )
