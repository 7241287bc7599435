"""The Kimi caller: the `call` map-reduce and the packer use for every request of a run.

    resume by request key (a finished call is never paid twice) -> budget reservation -> request policy
    (Kimi's exact count near the window) -> client -> the call log (one row per call, or per document of
    a pack) -> the document's running totals

State is written after success, never before: a call row exists only for a call that returned.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kimidocs.core import tokens
from kimidocs.core.costs import call_cost, request_estimate
from kimidocs.core.mapreduce import CallOutcome
from kimidocs.core.packing import split_usage
from kimidocs.core.records import CallRecord, CallStatus, CallTotals, Stage, Usage
from kimidocs.core.requests import ChatRequest
from kimidocs.core.responses import CutAttempt
from kimidocs.core.results import json_unusable_reason, unusable_reason
from kimidocs.core.schedule import Scheduler
from kimidocs.kimi.errors import KimiError
from kimidocs.kimi.policy import apply_policy, should_stream
from kimidocs.run.context import RunAborted, RunContext

log = logging.getLogger(__name__)


Judge = Callable[[Stage | str, str | None, str | None], str | None]


def _reusable(prior: CallRecord, judge: Judge = unusable_reason) -> bool:
    """A logged call whose answer can stand in for a new one (rows logged `ok` before `unusable`
    existed are checked again here)."""
    if prior.response is None:
        return False
    return judge(prior.stage, prior.response, prior.finish_reason) is None


class KimiCaller:
    """The `call` that map-reduce uses: resume by request key, budget, policy, client, call log.

    A packed request (`shares`: doc_id -> weight, its rendered tokens) is logged once per document it
    carried: same request key and response, that document's share of the tokens and the cost, so
    per-document costs stay right. `totals(doc_id)` is one document's share.
    """

    def __init__(
        self,
        ctx: RunContext,
        doc_id: str | None,
        *,
        shares: dict[str, int] | None = None,
        path: str | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.ctx = ctx
        self.scheduler = scheduler or ctx.scheduler  # whose warm-up gate the run's first call passes
        self.doc_id = doc_id
        self.shares = shares
        self.path = path  # the document's file, for progress (None for a pack)
        self._lock = threading.Lock()
        self._totals: dict[str | None, CallTotals] = {}  # doc_id -> what its calls cost
        # What makes an answer unusable: a Summary's shape, or (a declared profile's tasks, whose
        # schemas map-reduce checks and repairs) any JSON object not cut at max_tokens.
        self.judge: Judge = json_unusable_reason if getattr(ctx, "declared", None) else unusable_reason

    def totals(self, doc_id: str | None = None) -> CallTotals:
        """What the calls cost: this document's, or (a pack) document `doc_id`'s share."""
        key = doc_id if self.shares else self.doc_id
        with self._lock:
            return self._totals.get(key, CallTotals())

    def _add(self, doc_id: str | None, usage: Usage, cost: float) -> None:
        with self._lock:
            self._totals[doc_id] = self._totals.get(doc_id, CallTotals()).plus(usage, cost)

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
        if prior is not None and _reusable(prior, self.judge):
            ctx.observer.call_reused(request.request_key)
            if self.path is not None:
                ctx.observer.document_call(self.path, request.stage)
            return CallOutcome(content=prior.response or "", finish_reason=prior.finish_reason, reused=True)
        # The run's first call goes alone (it warms the system prompt); the others wait for it here.
        warmup = self.scheduler.warmup
        if not warmup.enter():
            return self._send(request)
        warmed = 0
        try:
            outcome = self._send(request)
            warmed = self.scheduler.system_tokens
            return outcome
        finally:
            warmup.leave(warmed)

    def _send(self, request: ChatRequest) -> CallOutcome:
        """One request to the client, logged (budget, policy, call rows, totals)."""
        ctx = self.ctx
        if ctx.aborted.is_set():
            raise RunAborted(ctx.abort_reason or "run aborted")
        max_tokens = int(request.body.get("max_tokens") or 0)
        estimate = request_estimate(request.prompt_tokens_est, max_tokens, ctx.model)
        body = self._policy_body(request, max_tokens)
        record = call_record(ctx, request, self.doc_id)
        held = ctx.guard.reserve(estimate)
        try:
            result = ctx.backend.client.chat(
                body,
                stream=should_stream(request.prompt_tokens_est, max_tokens),
                tokens_est=request.prompt_tokens_est + max_tokens,
            )
        except KimiError as err:
            ctx.guard.settle(held, 0.0)
            self._log_cut_attempts(request, record, err.cut_attempts)
            failed = replace(
                record,
                status=CallStatus.ERROR,
                error=str(err),
                http_status=getattr(err, "status", None),
                attempts=getattr(err, "attempts", 1) or 1,
            )
            ctx.store.save_calls([row for row, _u, _c in self._per_document(failed, Usage())])
            if getattr(err, "fatal_for_run", False):
                ctx.abort(str(err))
                raise RunAborted(str(err)) from err
            raise
        self._log_cut_attempts(request, record, result.cut_attempts)
        usage, usage_source = result.usage, "reported"
        if not result.usage_reported:  # never a silent zero: our own count, flagged, for budget and log
            usage, usage_source = estimated_usage(request, result.content), "estimated"
            log.warning("%s: the server reported no token usage; storing our estimate", request.request_key)
        cost = call_cost(usage, ctx.model)
        ctx.guard.settle(held, cost)
        unusable = self.judge(request.stage, result.content, result.finish_reason)
        done = replace(
            record,
            usage_source=usage_source,
            status=CallStatus.UNUSABLE if unusable else CallStatus.OK,
            error=unusable,
            latency_ms=result.latency_ms,
            ttft_ms=result.ttft_ms,
            attempts=result.attempts,
            finish_reason=result.finish_reason,
            http_status=result.http_status,
            response=result.content,
        )
        self._log([(done, usage)])
        ctx.observer.call_finished(usage, cost, request.stage)
        if self.path is not None:
            ctx.observer.document_call(self.path, request.stage)
        return CallOutcome(content=result.content, finish_reason=result.finish_reason)

    def _log_cut_attempts(
        self, request: ChatRequest, record: CallRecord, cut: tuple[CutAttempt, ...]
    ) -> None:
        """Log and charge each attempt the server began streaming before the cut (issue 22.3): it read
        the prompt and wrote part of an answer, so it bills it. Usage is the server's when a chunk
        carried it, else ours (`estimated`: the prompt at the miss price and the text that arrived)."""
        billed: list[tuple[CallRecord, Usage]] = []
        for attempt in cut:
            usage, source = attempt.usage, "reported"
            if usage is None:
                usage, source = estimated_usage(request, attempt.partial), "estimated"
            row = replace(
                record,
                call_id=uuid.uuid4().hex,
                status=CallStatus.INTERRUPTED,
                error=attempt.error,
                attempts=attempt.attempt,
                http_status=200,
                usage_source=source,
            )
            billed.append((row, usage))
        for (_row, usage), cost in zip(billed, self._log(billed), strict=True):
            self.ctx.guard.settle(None, cost)
            self.ctx.observer.call_finished(usage, cost, request.stage)

    def _log(self, calls: list[tuple[CallRecord, Usage]]) -> list[float]:
        """Store calls that were billed (one row each, or one per document of a pack with its share) in
        one write, add them to the totals; what each cost."""
        if not calls:
            return []
        rows = [self._per_document(record, usage) for record, usage in calls]
        self.ctx.store.save_calls([replace(r, usage=part, cost_usd=c) for one in rows for r, part, c in one])
        for r, part, c in (x for one in rows for x in one):
            self._add(r.doc_id, part, c)
        return [sum(c for _r, _p, c in one) for one in rows]

    def _policy_body(self, request: ChatRequest, max_tokens: int) -> dict:
        """The body as the model wants it; near the window, Kimi's exact count decides.

        Our o200k count is an estimate: when it is within the safety margin of the window, ask
        `estimate-token-count` and refuse (ContextLengthExceeded, typed) instead of paying for a 400.
        """
        model = self.ctx.model
        # `prompt_cache_key`: one per document prefix, so its tasks, questions and map calls share it.
        key = request.prefix_key[:32] or None
        if tokens.with_margin(request.prompt_tokens_est) + max_tokens <= model.window:
            return apply_policy(dict(request.body), model, cache_key=key)
        exact = self.ctx.backend.client.estimate_tokens(model.id, request.body["messages"])
        self.ctx.observer.exact_count(request.prompt_tokens_est, exact)
        return apply_policy(dict(request.body), model, prompt_tokens=exact, cache_key=key)


def call_record(ctx: RunContext, request: ChatRequest, doc_id: str | None, **fields: Any) -> CallRecord:
    """A call row for `request` sent now in this run; `fields` add what is known of how it ended."""
    return CallRecord(
        call_id=uuid.uuid4().hex,
        run_id=ctx.run_id,
        doc_id=doc_id,
        stage=request.stage,
        request_key=request.request_key,
        model=ctx.model.id,
        backend=ctx.backend.name,
        chunk_index=request.chunk_index,
        level=request.level,
        prompt_tokens_est=request.prompt_tokens_est,
        started_at=datetime.now(UTC),
        **fields,
    )


def estimated_usage(request: ChatRequest, content: str | None) -> Usage:
    """Usage when the server reported none: the prompt estimate, no cache hit, the answer counted."""
    return Usage(prompt_tokens=request.prompt_tokens_est, completion_tokens=tokens.count(content or ""))
