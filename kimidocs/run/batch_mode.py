"""Batch mode: a run's calls through Kimi's Batch API (60 % of the price), in rounds, resumable.

    prepare every document (extract, gate, plan) as in interactive mode
    round: replay each pending document's `run_plan` with a `BatchCaller`
           answered (this run's batch results)   -> logged like a real-time call, at the batch price
           already in the call log               -> reused (the same resume as interactive mode)
           neither                               -> gathered for the round's batch; the document waits
    submit the round's requests as one batch (budget reserved first, a `pending` row keyed by the
           uploaded file stored before the create, the batch id right after),
    wait for it (bounded), read its lines, replay again: singles and maps, then each reduce level / repair

`run_plan` is unchanged: a miss raises `Deferred` (a BaseException, so no `except Exception` turns it
into a failure); `run_plan` is run with every chunk of a level in flight together, so one replay gathers
a whole level (more than `_WIDE` chunks just takes another round). A rerun over the same folder picks up
the batches stored not `done` (polls them, reads their results) and submits only what is missing; a
`pending` row (killed between upload and storing the id) adopts the batch made from its file, or
creates it from that file now.

Waiting is bounded by `batch_timeout_s`: a batch still running then is handed over, not failed. The
documents it holds end `skipped` with error type `BatchPending` (`BATCH_PENDING`), the run closes, and
a later run over the folder collects the batch (above). The nightly flow schedules that later run itself
(flows/analyze.py), so hours of batch processing hold no worker slot.

Fallbacks (one log line each): a model without a batch price, a tier0 account, or a 403 on create run
the remaining calls in real time; a line that failed in `RETRY_ROUNDS` batches goes real time (its call
row has no batch_id); an expired batch's missing lines are simply asked again in the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from kimidocs.core.batching import BatchLineResult
from kimidocs.core.budget import BudgetExceeded
from kimidocs.core.costs import batch_call_cost, request_estimate
from kimidocs.core.mapreduce import CallOutcome
from kimidocs.core.records import BatchRow, CallRecord, CallStatus, DocumentStatus
from kimidocs.core.requests import ChatRequest
from kimidocs.core.schedule import RunWarmup, Scheduler, WaitDecision
from kimidocs.kimi.batch import BatchClient
from kimidocs.kimi.errors import BatchWaitTimeout, KimiError, PermissionDenied
from kimidocs.run.caller import KimiCaller, call_record
from kimidocs.run.context import DocumentOutcome, RunContext
from kimidocs.run.discover import FoundFile
from kimidocs.run.document import (
    Attempt,
    finished,
    guarded,
    outcome_of,
    prepare,
    started,
    summarise,
)
from kimidocs.run.sequence import Callers, Deferred, Prepared
from kimidocs.store import StoreError

log = logging.getLogger(__name__)

BATCH_PENDING = "BatchPending"  # error type of a document whose answers are in a batch still running
RETRY_ROUNDS = 2  # a line that failed in this many batches is sent in real time
MAX_ROUNDS = 40  # a safety stop: reduce levels + repairs + retries stay far below
_WIDE = 64  # calls of one level in flight together while replaying (no network: all answered or missed)
_GATHER_S = 0.02  # a miss waits this long before raising, so the level's other calls get to record theirs


@dataclass
class _Miss:
    request: ChatRequest
    doc_id: str | None
    body: dict
    estimate_usd: float


@dataclass
class BatchState:
    """What the rounds of one run share: answers by request key, this round's misses, failure counts."""

    answers: dict[str, tuple[str, BatchLineResult]] = field(default_factory=dict)  # key -> (batch, line)
    misses: dict[str, _Miss] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    interactive: bool = False  # batches are not available: every call goes real time
    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: list[str] = field(default_factory=list)
    retried_interactive: int = 0

    def take(self, batch_id: str, keys: tuple[str, ...], lines: dict[str, BatchLineResult]) -> None:
        with self.lock:
            for key in keys:
                line = lines.get(key)
                if line is not None and line.ok:
                    self.answers[key] = (batch_id, line)
                else:
                    self.failures[key] = self.failures.get(key, 0) + 1


class BatchScheduler(Scheduler):
    """No prefix to warm in a batch: every group starts together (and the run has no warm-up call)."""

    def group(self, name: str, calls: int, shared_tokens: int) -> WaitDecision:
        d = super().group(name, calls, shared_tokens)
        return replace(d, first_alone=False)


class BatchCaller(KimiCaller):
    """A `KimiCaller` whose requests are answered by the run's batches (see the module's doc)."""

    def __init__(
        self,
        ctx: RunContext,
        doc_id: str | None,
        state: BatchState,
        *,
        path: str | None,
        scheduler: Scheduler,
    ) -> None:
        super().__init__(ctx, doc_id, path=path, scheduler=scheduler)
        self.state = state
        self._served: dict[str, CallOutcome] = {}

    def __call__(self, request: ChatRequest) -> CallOutcome:
        served = self._served.get(request.request_key)
        if served is not None:
            return replace(served, reused=True)
        outcome = super().__call__(request)
        self._served[request.request_key] = outcome
        return outcome

    def _send(self, request: ChatRequest) -> CallOutcome:
        state, key = self.state, request.request_key
        with state.lock:
            answer = state.answers.get(key)
            failures = state.failures.get(key, 0)
        if answer is not None:
            return self._serve(request, *answer)
        if state.interactive:
            return super()._send(request)
        if failures >= RETRY_ROUNDS:
            log.warning("%s failed in %d batches: sending it in real time", key, failures)
            with state.lock:
                state.retried_interactive += 1
            return super()._send(request)
        max_tokens = int(request.body.get("max_tokens") or 0)
        body = self._policy_body(request, max_tokens)
        body.pop("stream", None)
        body.pop("stream_options", None)
        model = self.ctx.model
        estimate = request_estimate(request.prompt_tokens_est, max_tokens, model)
        estimate *= model.batch_price_factor or 1.0
        with state.lock:
            state.misses.setdefault(key, _Miss(request, self.doc_id, body, estimate))
        time.sleep(_GATHER_S)
        raise Deferred(key)

    def _serve(self, request: ChatRequest, batch_id: str, line: BatchLineResult) -> CallOutcome:
        """A batch line as a call: logged (batch id, batch price) and added to the totals."""
        ctx = self.ctx
        cost = batch_call_cost(line.usage, ctx.model)
        ctx.guard.settle(None, cost)
        unusable = self.judge(request.stage, line.content, line.finish_reason)
        record = call_record(
            ctx,
            request,
            self.doc_id,
            usage=line.usage,
            cost_usd=cost,
            finish_reason=line.finish_reason,
            http_status=line.status_code,
            status=CallStatus.UNUSABLE if unusable else CallStatus.OK,
            error=unusable,
            response=line.content,
            usage_source="reported" if line.usage_reported else "estimated",
            batch_id=batch_id,
        )
        ctx.store.save_calls([record])
        self._add(self.doc_id, line.usage, cost)
        ctx.observer.call_finished(line.usage, cost, request.stage)
        if self.path is not None:
            ctx.observer.document_call(self.path, request.stage)
        return CallOutcome(content=line.content, finish_reason=line.finish_reason)


def batch_unavailable(ctx: RunContext) -> str | None:
    """Why this run cannot use batches (the model, the tier), or None."""
    if not ctx.model.supports_batch:
        return f"model {ctx.model.id} does not take batches"
    if ctx.settings.tier == "tier0":
        return "Tier0 accounts cannot use the Batch API (Tier1 and above)"
    return None


def _wait_and_read(
    ctx: RunContext,
    client: BatchClient,
    state: BatchState,
    row: BatchRow,
    misses: dict[str, _Miss] | None = None,
) -> None:
    """Poll a stored batch to its end, take its lines, record its status (done once replayed). A line
    without an answer is logged as an `error` call with the batch id (when `misses` says what it was),
    and asked again in the next round."""
    assert row.batch_id is not None, "a pending row is resolved (`_resolve`) before it is read"
    batch = client.wait(
        row.batch_id,
        poll_s=min(ctx.settings.batch_poll_s, ctx.settings.batch_timeout_s),
        max_poll_s=max(ctx.settings.batch_poll_s, 10 * ctx.settings.batch_poll_s),
        timeout_s=ctx.settings.batch_timeout_s,
    )
    lines = client.results(batch) if batch.terminal and batch.has_results else {}
    state.take(row.batch_id, row.request_keys, lines)
    failed = []
    for key in row.request_keys:
        line = lines.get(key)
        miss = (misses or {}).get(key)
        if (line is None or not line.ok) and miss is not None:
            why = f"{line.error_type}: {line.error_message}" if line else f"no result (batch {batch.status})"
            failed.append(_error_row(ctx, miss, row.batch_id, why, line.status_code if line else None))
    ctx.store.save_calls(failed)
    ctx.store.update_batch(row.input_file_id, batch.status)
    log.info(
        "batch %s %s: %d of %d lines answered",
        row.batch_id,
        batch.status,
        sum(1 for k in row.request_keys if k in lines and lines[k].ok),
        len(row.request_keys),
    )


def _error_row(ctx: RunContext, miss: _Miss, batch_id: str, error: str, status: int | None) -> CallRecord:
    return call_record(
        ctx,
        miss.request,
        miss.doc_id,
        http_status=status,
        status=CallStatus.ERROR,
        error=error,
        batch_id=batch_id,
    )


def _create(ctx: RunContext, client: BatchClient, row: BatchRow) -> BatchRow:
    """Create the batch of a pending row (its file is uploaded, its row stored) and store its id."""
    batch = client.create(row.input_file_id, metadata={"run_id": row.run_id, "round": row.round})
    ctx.store.set_batch_id(row.input_file_id, batch.id, batch.status)
    return replace(row, batch_id=batch.id, status=batch.status)


def _resolve(ctx: RunContext, client: BatchClient, row: BatchRow) -> BatchRow:
    """A pending row of an earlier run (killed between upload and storing the batch id): adopt the batch
    the server made from its file, or create it now from the same file (its lines were never asked)."""
    found = client.find_by_input(row.input_file_id)
    if found is None:
        log.info("pending batch of file %s was never created: creating it now", row.input_file_id)
        return _create(ctx, client, row)
    log.info("pending batch of file %s is %s: adopting it", row.input_file_id, found.id)
    ctx.store.set_batch_id(row.input_file_id, found.id, found.status)
    return replace(row, batch_id=found.id, status=found.status)


def _submit(ctx: RunContext, client: BatchClient, state: BatchState, round_no: int) -> BatchRow | None:
    """The round's misses as one batch: budget reserved, uploaded, stored as `pending` (keyed by the
    input file), created, its id stored. A kill at any point leaves either no row (nothing was created)
    or a row a rerun resolves (`_resolve`), so no line is ever submitted twice. None when the account
    turns out not to take batches (403): the run goes on in real time."""
    misses = dict(state.misses)
    estimate = sum(m.estimate_usd for m in misses.values())
    held = ctx.guard.reserve(estimate)
    file_id: str | None = None
    try:
        file_id = client.upload(
            {k: m.body for k, m in misses.items()}, filename=f"kimidocs-{ctx.run_id}.jsonl"
        )
        pending = BatchRow(
            None,
            ctx.run_id,
            str(ctx.options.folder),
            ctx.model.id,
            file_id,
            round_no,
            tuple(misses),
            "pending",
            estimate,
        )
        ctx.store.save_batch(pending)
        row = _create(ctx, client, pending)
    except PermissionDenied as err:
        ctx.guard.settle(held, 0.0)
        if file_id is not None:
            ctx.store.update_batch(file_id, "refused", done=True)
        log.warning("the Batch API is not open for this account (%s): continuing in real time", err)
        state.interactive = True
        return None
    except BaseException:
        ctx.guard.settle(held, 0.0)
        raise
    assert row.batch_id is not None
    state.batches.append(row.batch_id)
    log.info("round %d: batch %s submitted with %d requests", round_no, row.batch_id, len(misses))
    try:
        _wait_and_read(ctx, client, state, row, misses)
    finally:
        ctx.guard.settle(held, 0.0)  # each answer settles its own cost when it is served
    return row


@dataclass
class _Doc:
    attempt: Attempt
    prepared: Prepared
    t0: float


def batch_callers(ctx: RunContext, state: BatchState) -> Callers:
    """Calls answered by the run's batches: no prefix to warm in a batch (every group starts together,
    the run has no warm-up call), and a level's calls all in flight together while replaying."""
    scheduler = BatchScheduler(ctx.model, ctx.scheduler.system_tokens, ctx.scheduler.threshold_usd)
    scheduler.warmup = RunWarmup(first_alone=False)
    return Callers(
        lambda doc_id, path: BatchCaller(ctx, doc_id, state, path=path, scheduler=scheduler), scheduler, _WIDE
    )


def run_batch_mode(ctx: RunContext, files: list[FoundFile]) -> list[DocumentOutcome]:
    """Every file of the run in batch mode; outcomes in `files`' order."""
    state = BatchState()
    why = batch_unavailable(ctx)
    if why is not None:
        log.warning("batch mode: %s; running in real time instead", why)
        state.interactive = True
    callers = batch_callers(ctx, state)
    outcomes: dict[str, DocumentOutcome] = {}
    pending: list[_Doc] = []

    def prepared_one(found: FoundFile) -> _Doc | DocumentOutcome:
        t0 = started(ctx, found)
        attempt = Attempt(found)
        prepared = guarded(ctx, attempt, lambda a: prepare(ctx, a))
        if isinstance(prepared, DocumentOutcome):
            return finished(ctx, prepared, t0)
        return _Doc(attempt, prepared, t0)

    # Documents are prepared (extracted, planned) side by side as in interactive mode.
    with ThreadPoolExecutor(max_workers=max(1, ctx.options.concurrency)) as pool:
        for found, item in zip(files, pool.map(prepared_one, files), strict=True):
            if isinstance(item, DocumentOutcome):
                outcomes[found.path] = item
            else:
                pending.append(item)
    client = BatchClient(ctx.backend.client)
    opened = ctx.store.open_batches(str(ctx.options.folder), ctx.model.id) if pending else []
    try:
        for row in opened:  # an earlier run's batches: read them instead of asking again
            log.info(
                "resuming batch %s (round %d, %d requests)", row.batch_id, row.round, len(row.request_keys)
            )
            if row.batch_id is None:
                row = _resolve(ctx, client, row)
            _wait_and_read(ctx, client, state, row)
    except BatchWaitTimeout as still:
        return _hand_over(ctx, files, outcomes, pending, still)
    to_close = [row.input_file_id for row in opened]
    round_no = max((row.round for row in opened), default=0)
    while pending:
        round_no += 1
        state.misses.clear()
        waiting: list[_Doc] = []
        for d in pending:
            try:
                out = summarise(ctx, d.attempt, d.prepared, callers)
            except Deferred:
                waiting.append(d)
                continue
            except StoreError:
                raise
            except Exception as err:
                out = outcome_of(ctx, d.attempt, err)
            outcomes[d.attempt.found.path] = finished(ctx, out, d.t0)
        for file_id in to_close:  # every line they answered is in the call log now
            ctx.store.update_batch(file_id, done=True)
        to_close = []
        pending = waiting
        if not pending:
            break
        if round_no > MAX_ROUNDS or not state.misses:
            stuck = KimiError(f"batch mode: no progress after {round_no} rounds")
            for d in pending:
                outcomes[d.attempt.found.path] = finished(ctx, outcome_of(ctx, d.attempt, stuck), d.t0)
            break
        try:
            submitted = _submit(ctx, client, state, round_no)
        except BudgetExceeded as over:
            for d in pending:
                outcomes[d.attempt.found.path] = finished(ctx, outcome_of(ctx, d.attempt, over), d.t0)
            break
        except BatchWaitTimeout as still:
            return _hand_over(ctx, files, outcomes, pending, still)
        if submitted is not None:
            to_close.append(submitted.input_file_id)
    return [outcomes[f.path] for f in files]


def _hand_over(
    ctx: RunContext,
    files: list[FoundFile],
    outcomes: dict[str, DocumentOutcome],
    pending: list[_Doc],
    still: BatchWaitTimeout,
) -> list[DocumentOutcome]:
    """The run stops waiting for a batch still running: its documents end `skipped` (BatchPending), and a
    later run over the folder collects the batch without asking again."""
    log.info("batch %s is still %s: handing it over to a later run", still.batch_id, still.status)
    message = f"waiting for batch {still.batch_id} ({still.status}); a later run over the folder collects it"
    for d in pending:
        waiting = DocumentOutcome(
            d.attempt.found.path,
            DocumentStatus.SKIPPED,
            doc_id=d.prepared.doc.sha256,
            error_type=BATCH_PENDING,
            message=message,
            pages=len(d.prepared.doc.pages),
        )
        outcomes[d.attempt.found.path] = finished(ctx, waiting, d.t0)
    return [outcomes[f.path] for f in files]


def batch_pending(outcomes: list[DocumentOutcome]) -> bool:
    """Whether a run handed documents over to a batch still running (a later run must collect them)."""
    return any(o.error_type == BATCH_PENDING for o in outcomes)
