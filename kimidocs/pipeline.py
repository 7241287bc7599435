"""One document end to end, and a folder of them, with no Prefect in sight.

    discover -> sha256 (unchanged? skip) -> extract -> store document -> quality gate
      -> plan -> map/reduce calls (each logged the moment it returns) -> citations -> store summary

`flows/` wraps `open_run` / `analyze_file` / `close_run` in Prefect tasks; `run_folder` is the
same thing with a thread pool, for `kimidocs analyze` without Prefect and for benchmarks.
State is written after success, never before: a call row exists only for a call that returned,
a summary only for a document that finished, so a crashed run resumes without re-paying.
"""

from __future__ import annotations

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
from kimidocs.discover import FoundFile, discover
from kimidocs.kimi.errors import KimiError
from kimidocs.kimi.limits import RateLimiter
from kimidocs.kimi.policy import apply_policy, should_stream
from kimidocs.mapreduce import CallOutcome, run_plan
from kimidocs.models import ModelInfo, get_model
from kimidocs.planning import Plan, budget_for, page_tokens_of, plan_document
from kimidocs.records import CallRecord, FailureRecord, FileRecord, RunRecord, RunTotals
from kimidocs.requests import ChatRequest
from kimidocs.results import check_citations
from kimidocs.settings import Settings, load_settings
from kimidocs.store import Store, SummaryRow
from prompts import Profile, load_profile

Observer = Callable[[str, dict], None]


def _quiet(event: str, data: dict) -> None:
    """Default observer: nothing on screen."""


class RunAborted(Exception):
    """A problem that would fail every remaining document (wrong key, no quota): stop the run."""


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

    def abort(self, reason: str) -> None:
        self.abort_reason = self.abort_reason or reason
        self.aborted.set()


def open_run(
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = _quiet,
    limiter: RateLimiter | None = None,
    backend: Backend | None = None,
) -> RunContext:
    """Open the store (migrated), the backend and a `runs` row for a new run."""
    settings = settings or load_settings()
    if options.db:
        settings = settings.model_copy(update={"db": Path(options.db)})
    model = get_model(options.model or settings.kimi_model)
    profile = load_profile(options.profile)
    store = Store(settings.db)
    store.migrate()
    backend = backend or open_backend(settings, limiter=limiter or RateLimiter.for_tier(settings.tier))
    run_id = uuid.uuid4().hex
    store.start_run(
        RunRecord(
            run_id=run_id,
            started_at=datetime.now(UTC),
            folder=str(options.folder),
            profile=profile.name,
            model=model.id,
            backend=backend.name,
            flow_run_id=options.flow_run_id,
        )
    )
    ctx = RunContext(
        options, settings, store, backend, model, profile, run_id, CostGuard(options.max_cost_usd)
    )
    ctx.observer = observer
    observer(
        "run_started", {"run_id": run_id, "backend": backend.name, "model": model.id, "db": str(settings.db)}
    )
    return ctx


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
    outcome = _analyze(ctx, found)
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


def _analyze(ctx: RunContext, found: FoundFile) -> DocumentOutcome:
    if ctx.aborted.is_set():
        return DocumentOutcome(found.path, "skipped", error_type="RunAborted", message=ctx.abort_reason)
    if found.error:
        return _fail(ctx, found, "discover", "UnreadableFile", f"{found.path}: {found.error}")
    doc_id = extractors.sha256_file(found.path)
    file = FileRecord(found.path, doc_id, found.size, found.mtime)
    key = (doc_id, ctx.profile.name, ctx.profile.version, ctx.model.id)
    if not ctx.options.force and not ctx.options.dry_run and ctx.store.has_summary(*key):
        ctx.store.touch_file(file)
        return DocumentOutcome(found.path, "unchanged", doc_id=doc_id)
    limits = extractors.Limits(
        max_bytes=ctx.settings.max_file_bytes,
        max_pages=ctx.settings.max_pages,
        timeout_s=ctx.settings.extract_timeout_s,
    )
    try:
        doc = extractors.extract(found.path, limits=limits, keep_images=ctx.model.images)
    except ExtractionError as err:
        ctx.store.save_failed_file(
            ctx.run_id, found.path, doc_id, found.size, found.mtime, err.error_type, str(err)
        )
        return DocumentOutcome(
            found.path, "failed", doc_id=doc_id, error_type=err.error_type, message=str(err)
        )
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
    return _summarise(ctx, found, doc, plan, base)


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
    if result.summary is None:
        reason = "; ".join(result.errors) or "no summary produced"
        return replace(
            _fail(ctx, found, "validate", "OutputInvalid", f"{found.path}: {reason}", doc.sha256),
            **caller.totals(),
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
        )
    )
    ctx.store.set_document_status(doc.sha256, "ok" if not result.failed_chunks else "partial")
    return replace(
        base,
        status="ok",
        coverage=result.coverage,
        title=summary.title or None,
        **caller.totals(),
        message=report.describe() if report.dropped else None,
    )


class KimiCaller:
    """The `call` that map-reduce uses: resume by request key, budget, policy, client, call log."""

    def __init__(self, ctx: RunContext, doc_id: str) -> None:
        self.ctx = ctx
        self.doc_id = doc_id
        self._lock = threading.Lock()
        self._calls = 0
        self._prompt = self._cached = self._completion = 0
        self._cost = 0.0

    def totals(self) -> dict:
        with self._lock:
            return {
                "calls": self._calls,
                "prompt_tokens": self._prompt,
                "cached_tokens": self._cached,
                "completion_tokens": self._completion,
                "cost_usd": self._cost,
            }

    def __call__(self, request: ChatRequest) -> CallOutcome:
        ctx = self.ctx
        if ctx.aborted.is_set():
            raise RunAborted(ctx.abort_reason or "run aborted")
        prior = ctx.store.find_completed_call(request.request_key)
        if prior is not None and prior.response is not None:
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
            ctx.store.save_call(
                replace(
                    record,
                    status="error",
                    error=str(err),
                    http_status=getattr(err, "status", None),
                    attempts=getattr(err, "attempts", 1) or 1,
                )
            )
            if getattr(err, "fatal_for_run", False):
                ctx.abort(str(err))
                raise RunAborted(str(err)) from err
            raise
        cost = call_cost(result.usage, ctx.model)
        ctx.guard.settle(estimate, cost)
        ctx.store.save_call(
            replace(
                record,
                usage=result.usage,
                cost_usd=cost,
                latency_ms=result.latency_ms,
                ttft_ms=result.ttft_ms,
                attempts=result.attempts,
                finish_reason=result.finish_reason,
                http_status=result.http_status,
                response=result.content,
            )
        )
        with self._lock:
            self._calls += 1
            self._prompt += result.usage.prompt_tokens
            self._cached += result.usage.cached_tokens
            self._completion += result.usage.completion_tokens
            self._cost += cost
        ctx.observer("call_finished", {"usage": result.usage, "cost_usd": cost, "stage": request.stage})
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
        str(ctx.settings.db),
        outs,
        status,
        ctx.abort_reason,
        time.perf_counter() - ctx.started,
    )
    ctx.store.finish_run(
        ctx.run_id,
        RunTotals(
            status=status,
            documents_ok=report.count("ok", "unchanged"),
            documents_skipped=report.count("skipped"),
            documents_failed=report.count("failed"),
            calls=sum(o.calls for o in outs),
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
    ctx.backend.close()
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
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kimidocs-doc") as pool:
            outcomes = list(pool.map(lambda f: analyze_file(ctx, f), files))
    except BaseException:
        ctx.backend.close()
        raise
    return close_run(ctx, outcomes)
