"""A run's lifecycle: open it (or attach to one that is open), close it, abandon it. No Prefect.

    open_run     check options, take the database's run lock, open store + backend, insert the `runs` row
    attach_run   a context for an existing `runs` row (a Prefect task in any process): no new row, no lock
    close_run    the run's totals written, the lock released (search indexes itself: store/search_index.py)
    abandon_run  a run that ends by an exception is marked `failed`, never left `running`

`RunContext` is everything the documents of one run share; `DocumentOutcome` is how one file ended and
`RunReport` what the whole run did (the CLI table, the Prefect artifact, the exit status).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from kimidocs.core.budget import BudgetExceeded, CostGuard, Reservation
from kimidocs.core.models import ModelInfo, UnknownModel, get_model, successors
from kimidocs.core.planning import Strategy
from kimidocs.core.records import CallTotals, DocumentStatus, RunRecord, RunStatus, RunTotals, Stage, Usage
from kimidocs.core.schedule import RunWarmup, Scheduler, system_tokens
from kimidocs.kimi.limits import Limiter
from kimidocs.profiles import (
    DeclaredProfile,
    ResolvedProfile,
    planning_profile,
    question_profile,
    resolve,
    search_path,
    views_of,
)
from kimidocs.run.backend import Backend, open_backend, run_limiter
from kimidocs.run.discover import FoundFile, discover
from kimidocs.run.settings import ConfigError, Settings, check_db_path, load_settings
from kimidocs.store import RunLock, Store, StoreError, shown_db
from prompts import Profile, ProfileError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunStarted:
    """What a run talks to, said when it opens (the CLI warns about the emulator from it)."""

    run_id: str
    backend: str
    emulated_here: bool
    base_url: str
    model: str
    db: str
    model_note: str | None = None  # the default model was not offered: which successor the run uses


class Observer(Protocol):
    """What a run tells whoever shows its progress (the CLI's screen, the flow's log), one method per
    event. Called from worker threads: implementations lock what they share."""

    def run_started(self, info: RunStarted) -> None: ...
    def run_waiting(self, message: str) -> None: ...
    def files_found(self, count: int) -> None: ...
    def document_started(self, path: str) -> None: ...
    def extract_progress(self, path: str, done: int, total: int) -> None: ...
    def document_planned(self, path: str, strategy: str, calls: int) -> None: ...
    def document_call(self, path: str, stage: Stage) -> None: ...
    def document_finished(self, outcome: DocumentOutcome) -> None: ...
    def call_finished(self, usage: Usage, cost_usd: float, stage: Stage) -> None: ...
    def call_reused(self, request_key: str) -> None: ...
    def exact_count(self, estimate: int, exact: int) -> None: ...
    def pack_part_failed(self, path: str, reason: str) -> None: ...
    def run_finished(self, report: RunReport) -> None: ...


class QuietObserver:
    """Hears every event and shows nothing: the default, and a base that overrides only what it shows."""

    def run_started(self, info: RunStarted) -> None:
        pass

    def run_waiting(self, message: str) -> None:
        pass

    def files_found(self, count: int) -> None:
        pass

    def document_started(self, path: str) -> None:
        pass

    def extract_progress(self, path: str, done: int, total: int) -> None:
        pass

    def document_planned(self, path: str, strategy: str, calls: int) -> None:
        pass

    def document_call(self, path: str, stage: Stage) -> None:
        pass

    def document_finished(self, outcome: DocumentOutcome) -> None:
        pass

    def call_finished(self, usage: Usage, cost_usd: float, stage: Stage) -> None:
        pass

    def call_reused(self, request_key: str) -> None:
        pass

    def exact_count(self, estimate: int, exact: int) -> None:
        pass

    def pack_part_failed(self, path: str, reason: str) -> None:
        pass

    def run_finished(self, report: RunReport) -> None:
        pass


QUIET: Observer = QuietObserver()


class RunAborted(Exception):
    """A problem that would fail every remaining document (wrong key, no quota): stop the run."""


class RunLedger(CostGuard):
    """The run's budget and abort as every process and machine of the run sees them: the store, which
    they all share by construction. Before each call it reads whether another process stopped the run,
    then (with a cap) reserves the call's estimate against the run's logged calls plus every reservation
    in flight, in one transaction the processes take in turn; the reservation is released once the call
    is logged. So spent stays within `max_cost_usd` for the run as a whole, whatever the number of
    processes, and the overshoot is at most what calls cost beyond their estimate (retried attempts cut
    mid-stream). A reservation of a process that died expires after `ttl_s`."""

    def __init__(self, store: Store, run_id: str, max_cost_usd: float | None, ttl_s: float) -> None:
        super().__init__(max_cost_usd)
        self.store = store
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def reserve(self, estimate_usd: float) -> Reservation:
        reason = self.store.abort_reason(self.run_id)
        if reason is not None:
            raise RunAborted(reason)
        local = super().reserve(estimate_usd)  # this process's view, for its own report
        if self.max_cost_usd is None:
            return local
        held = Reservation(estimate_usd, uuid.uuid4().hex)
        full = self.store.reserve_budget(
            self.run_id, held.id, estimate_usd, self.max_cost_usd, self.holder, self.ttl_s
        )
        if full is not None:
            super().settle(local, 0.0)
            spent, in_flight = full
            raise BudgetExceeded(
                f"budget: the run spent ${spent:.4f} + in flight ${in_flight:.4f} (every process) "
                f"+ this call ${estimate_usd:.4f} would pass max_cost_usd ${self.max_cost_usd:.4f}"
            )
        return held

    def settle(self, held: Reservation | None, actual_usd: float) -> None:
        super().settle(held, actual_usd)
        if held is not None and held.id:
            self.store.release_budget(self.run_id, held.id)


@dataclass(frozen=True, slots=True)
class PackCounts:
    """What packing did in one batch (or a whole run): documents sent in packs, pack requests, documents
    re-read alone. Plain numbers, so a batch run in another process can hand them back to the flow."""

    documents: int = 0
    requests: int = 0
    retried_alone: int = 0

    def __add__(self, other: PackCounts) -> PackCounts:
        return PackCounts(
            self.documents + other.documents,
            self.requests + other.requests,
            self.retried_alone + other.retried_alone,
        )


@dataclass
class PackStats:
    """A run's `PackCounts`, added to by every batch (thread-safe)."""

    counts: PackCounts = field(default_factory=PackCounts)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counts: PackCounts) -> None:
        with self.lock:
            self.counts = self.counts + counts

    @property
    def requests_saved(self) -> int:
        """Requests not made compared with reading every packed document alone (negative if packing
        cost more: a pack whose answer was unusable is one request more than nothing)."""
        c = self.counts
        return c.documents - c.requests - c.retried_alone

    @property
    def extra_call_rows(self) -> int:
        """Call rows beyond one per request: a pack is logged once per document it carried."""
        return self.counts.documents - self.counts.requests


MODES = ("interactive", "batch")


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
    mode: str = "interactive"  # "interactive" (real-time calls) | "batch" (Kimi's Batch API, 60 % price)
    # Free questions (`kimidocs ask`): each document answers them instead of the profile's tasks,
    # the answers go to `questions`; the profile is built from them (kimidocs.profiles.questions).
    questions: tuple[str, ...] = ()
    # Whether the run's first call goes alone to warm the system prompt (`Scheduler.plan_run`), decided
    # once by the process that lists the files and carried to every process of the run with the options.
    warm_start: bool | None = None


@dataclass(frozen=True, slots=True)
class DocumentOutcome:
    """How one file ended in this run."""

    path: str
    status: DocumentStatus
    doc_id: str | None = None
    error_type: str | None = None
    message: str | None = None
    pages: int = 0
    strategy: Strategy | None = None
    coverage: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_usd_est: float | None = None
    seconds: float = 0.0
    title: str | None = None

    def with_totals(self, totals: CallTotals) -> DocumentOutcome:
        """This outcome carrying `totals` (what the document's calls cost)."""
        return replace(
            self,
            calls=totals.calls,
            prompt_tokens=totals.prompt_tokens,
            cached_tokens=totals.cached_tokens,
            completion_tokens=totals.completion_tokens,
            cost_usd=totals.cost_usd,
        )

    @property
    def totals(self) -> CallTotals:
        return CallTotals(
            self.calls, self.prompt_tokens, self.cached_tokens, self.completion_tokens, self.cost_usd
        )


@dataclass
class RunContext:
    """Everything the documents of one run share. Built by `open_run` (or `attach_run`), closed by
    `close_run`."""

    options: RunOptions
    settings: Settings
    store: Store
    backend: Backend
    model: ModelInfo
    profile: Profile
    run_id: str
    guard: CostGuard
    observer: Observer = QUIET
    aborted: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    packs: PackStats = field(default_factory=PackStats)
    run_lock: RunLock | None = None  # one analysing run per database file, released by close_run
    model_note: str | None = None  # set by open_run when the default model gave way to its successor
    # When calls wait for a shared prefix to be cached: the run's warm-up gate and every decision taken.
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        threshold = self.settings.wait_min_saving_usd if self.settings.prefix_scheduling else math.inf
        self.scheduler = Scheduler(self.model, system_tokens(self.profile.system), threshold)
        if self.options.warm_start is False:
            self.scheduler.warmup = RunWarmup(first_alone=False)

    # A declared profile (user or built-in `contract`, `report`): its tasks, each stored in
    # task_results; `profile` is then the profile that plans a document for all of them.
    declared: DeclaredProfile | None = None

    def abort(self, reason: str) -> None:
        """Stop the run: this process at once, the others (tasks, fan-out children) before their next
        call (`RunLedger`)."""
        first = not self.aborted.is_set()
        self.abort_reason = self.abort_reason or reason
        self.aborted.set()
        if first:
            try:
                self.store.abort_run(self.run_id, reason)
            except StoreError as err:  # the store itself failing: this process still stops
                log.warning("could not record the run's stop for its other processes: %s", err)


def resolve_profile(name: str, settings: Settings) -> ResolvedProfile:
    """Profile `name` on the search path (KIMIDOCS_PROFILES, ./profiles, built-ins); `ProfileError`."""
    return resolve(name, search_path(settings.profiles_path))


def _resolve(
    options: RunOptions, settings: Settings | None
) -> tuple[Settings, ModelInfo, Profile, DeclaredProfile | None]:
    """Settings (with `options.db`), model and profile, or one `ConfigError` line. With
    `options.questions` the profile is built from them instead of looked up by name."""
    settings = settings or load_settings()
    if options.db:
        settings = settings.model_copy(update={"db": Path(options.db)})
    check_options(options)
    check_db_path(settings.db)
    try:
        model = settings.model(options.model)
        if options.questions:
            built = question_profile(options.questions)
            return settings, model, planning_profile(built), built
        found = resolve_profile(options.profile, settings)
    except (UnknownModel, ProfileError) as err:
        raise ConfigError(str(err)) from None
    if found.shadow_note:
        log.info("%s", found.shadow_note)
    return settings, model, found.profile, found.declared


def open_run(
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = QUIET,
    limiter: Limiter | None = None,
    backend: Backend | None = None,
) -> RunContext:
    """Open the store (migrated), the backend and a `runs` row for a new run.

    Everything a user can get wrong (options, model, profile, database path, a model the account does
    not offer) is checked first and raised as one `ConfigError` line, before any `runs` row exists.
    Then it waits while another run holds the database's run lock (`RunLock`): two runs on one
    database would both pay for every document neither has finished.
    """
    settings, model, profile, declared = _resolve(options, settings)
    run_id = uuid.uuid4().hex
    run_lock = _lock_database(settings.db, run_id, observer)
    opened: Backend | None = None
    try:
        store = Store(settings.db, data_path=settings.lake_data_path)
        store.migrate()
        if declared is not None and not options.questions:  # once per run; rebuilt on a new version
            store.refresh_profile_views(views_of(declared))  # (questions have no typed views)
        opened = backend or open_backend(settings, limiter=limiter or run_limiter(settings))
        explicit = bool(options.model or settings.kimi_model)
        model, model_note = offered_model(opened, model, explicit=explicit, dry_run=options.dry_run)
        if model_note is not None:  # every process of the run uses the successor
            log.warning("%s", model_note)
            options = replace(options, model=model.id)
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
        options,
        settings,
        store,
        backend,
        model,
        profile,
        run_id,
        CostGuard(options.max_cost_usd),
        declared=declared,
    )
    ctx.observer = observer
    ctx.run_lock = run_lock
    ctx.model_note = model_note
    if crashed:
        log.warning("runs whose process died before finishing, now marked crashed: %s", ", ".join(crashed))
    observer.run_started(
        RunStarted(
            run_id,
            backend.name,
            backend.emulated_here,
            backend.base_url,
            model.id,
            shown_db(settings.db),
            model_note,
        )
    )
    return ctx


def attach_run(
    run_id: str,
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = QUIET,
    limiter: Limiter | None = None,
    backend: Backend | None = None,
) -> RunContext:
    """A context for the existing run `run_id`, opened by `open_run` in another process (or thread).

    For the work of a run done elsewhere (a Prefect task in a process pool or on another worker): the
    same checks as `open_run`, its own store connection, backend and limiter, but no new `runs` row,
    no migration and not the database's run lock (the process that opened the run holds it). Its budget
    and abort are the run's (`RunLedger`): shared with every other process of the run through the store.
    Close it with `detach_run`.
    """
    settings, model, profile, declared = _resolve(options, settings)
    store = Store(settings.db)
    try:
        if not store.has_run(run_id):
            raise StoreError(f"{settings.db}: no run {run_id} to attach to")
        opened = backend or open_backend(settings, limiter=limiter or run_limiter(settings))
    except BaseException:
        store.close()
        raise
    ttl_s = settings.request_timeout_s * (settings.max_retries + 1) + 60
    guard = RunLedger(store, run_id, options.max_cost_usd, ttl_s)
    ctx = RunContext(
        options, settings, store, opened, model, profile, run_id, guard, observer=observer, declared=declared
    )
    if options.warm_start and store.find_run_call(run_id) is not None:  # another process warmed it
        ctx.scheduler.warmup = RunWarmup.warm(ctx.scheduler.system_tokens)
    return ctx


def detach_run(ctx: RunContext) -> None:
    """Close what `attach_run` opened; the run itself goes on (its owner closes it)."""
    try:
        ctx.store.close()
    finally:
        release_run(ctx)


def check_options(options: RunOptions) -> None:
    """Refuse options that cannot work, in one line each (a negative budget would skip every file)."""
    if options.max_cost_usd is not None and not options.max_cost_usd >= 0:
        raise ConfigError(f"--max-cost-usd (max_cost_usd) must be 0 or more, not {options.max_cost_usd}")
    if not 1 <= options.concurrency <= 64:
        raise ConfigError(f"concurrency must be between 1 and 64, not {options.concurrency}")
    if options.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {options.mode!r}")
    if not Path(options.folder).exists():
        raise ConfigError(f"{options.folder}: no such folder or file")


def offered_model(
    backend: Backend, model: ModelInfo, *, explicit: bool, dry_run: bool = False
) -> tuple[ModelInfo, str | None]:
    """The model the run uses, and a line saying why when it is not the one asked for.

    Once per run, against the account's list (read when the backend opened; when it could not be read, the
    calls will say why). A model the user chose (KIMI_MODEL, --model, the flow's `model`) is never
    replaced: not offered, it is one `ConfigError` naming the offered ones (a dry run plans it anyway).
    The client's default gives way to the first successor in the table the account offers (kimi-k2.5 ->
    kimi-k2.6 -> kimi-k3), so a new user's first run does not fail because Moonshot retired a model."""
    ids = backend.offered
    if not ids or model.id in ids:
        return model, None
    if not explicit:
        for successor in successors(model.id):
            if successor in ids:
                when = f", retired {model.retires}" if model.retires else ""
                note = (
                    f"model {model.id} is not offered at {backend.base_url}{when}: using its successor "
                    f"{successor} (choose another with --model or KIMI_MODEL)"
                )
                return get_model(successor), note
    if dry_run:
        return model, None
    raise ConfigError(
        f"model {model.id!r} is not offered at {backend.base_url} (retired, or not on this account); "
        f"the account offers: {', '.join(ids)}. Choose one with --model or KIMI_MODEL"
    )


def _lock_database(db: Path, run_id: str, observer: Observer) -> RunLock:
    """The database's run lock, taken for this run; waiting is said on the log and to the observer."""

    def waiting(message: str) -> None:
        log.info("%s", message)
        observer.run_waiting(message)  # the CLI says it on stderr, the flow in its log

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
    # The run's first call warms the system prompt for the rest, when enough calls will re-read it; the
    # decision goes to every process of the run with its options (`RunOptions.warm_start`).
    decision = ctx.scheduler.plan_run(len(found))
    ctx.options = replace(ctx.options, warm_start=decision.first_alone)
    log.info("prefix cache: %s", decision.describe())
    return found


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did, for the CLI table, the Prefect artifact and the exit status."""

    run_id: str
    backend: str
    model: str
    db: str
    outcomes: tuple[DocumentOutcome, ...]
    status: RunStatus
    message: str | None = None
    seconds: float = 0.0
    packed_requests_saved: int = 0
    scheduling: tuple[str, ...] = ()  # prefix-cache decisions (kimidocs/core/schedule.py), the run's first
    model_note: str | None = None  # the default model was replaced by its successor, and why

    def count(self, *statuses: DocumentStatus | str) -> int:
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
        return self.count(DocumentStatus.FAILED) > 0 or self.status == RunStatus.FAILED


def in_file_order(
    files: list[FoundFile], groups: Iterable[Iterable[DocumentOutcome]]
) -> list[DocumentOutcome]:
    """The outcomes of a run's groups of files, one per file, in `files`' order."""
    done = {o.path: o for group in groups for o in group}
    return [done[f.path] for f in files]


def close_run(ctx: RunContext, outcomes: Iterable[DocumentOutcome]) -> RunReport:
    """Write the run's totals, close the store and the backend."""
    outs = tuple(outcomes)
    status = (
        RunStatus.DRY_RUN
        if ctx.options.dry_run
        else (RunStatus.STOPPED if ctx.aborted.is_set() else RunStatus.COMPLETED)
    )
    report = RunReport(
        ctx.run_id,
        ctx.backend.name,
        ctx.model.id,
        shown_db(ctx.settings.db),
        outs,
        status,
        ctx.abort_reason,
        time.perf_counter() - ctx.started,
        ctx.packs.requests_saved,
        tuple(d.describe() for d in ctx.scheduler.decisions),
        ctx.model_note,
    )
    ctx.store.finish_run(
        ctx.run_id,
        RunTotals(
            status=status,
            documents_ok=report.count(DocumentStatus.OK, DocumentStatus.UNCHANGED),
            documents_skipped=report.count(DocumentStatus.SKIPPED),
            documents_failed=report.count(DocumentStatus.FAILED),
            calls=sum(o.calls for o in outs) - ctx.packs.extra_call_rows,
            prompt_tokens=report.prompt_tokens,
            cached_tokens=report.cached_tokens,
            completion_tokens=sum(o.completion_tokens for o in outs),
            cost_usd=report.cost_usd,
            message=ctx.abort_reason,
        ),
    )
    # No full-text indexing here: `kimidocs search` indexes what changed when it runs (search_index.py).
    ctx.store.close()  # release the file now so analysts and the next run get in at once
    release_run(ctx)
    ctx.observer.run_finished(report)
    return report


def abandon_run(ctx: RunContext, error: BaseException) -> None:
    """A run that ends by an exception is closed as `failed` with the reason, never left `running`."""
    try:
        ctx.store.finish_run(
            ctx.run_id, RunTotals(status=RunStatus.FAILED, message=f"{type(error).__name__}: {error}")
        )
    except StoreError as store_error:  # the database itself is what failed: say so, keep the first error
        log.error("could not mark run %s failed: %s", ctx.run_id, store_error)
    finally:
        ctx.store.close()
        release_run(ctx)
