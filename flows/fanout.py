"""One big folder over many workers: `analyze-folder` with `fan_out` hands shards to `analyze-shard` runs.

    parent (analyze-folder, fan_out=N)      child (analyze-shard, one per shard, on any worker)
      open_run: one `runs` row + run lock     attach_run to the parent's run (never a new run)
      list files, split_files(files, N)       the shard's documents as tasks, exactly like the parent
      run_deployment(analyze-shard) x N  -->  does without fan-out (`analyze_all`), then detach
      wait; a Crashed child is re-run   <--   GroupResult returned (persisted result)
      settle outcomes with the store's totals, close_run: one report, one set of totals

A child that crashed (its worker died: the zombie-run automation marks it Crashed when its heartbeats
stop, or the worker reports its process killed) is set back to Scheduled, as `prefect flow-run retry`
does, and another worker runs it; calls it had finished are found in the call log by request key and
not paid again. Outcomes travel back as the children's persisted return values (the report's per-document
lines); the money comes from the store's `calls` rows (see kimidocs/run/shards.py for why).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger, runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.states import Scheduled
from prefect.task_runners import ThreadPoolTaskRunner

from flows.documents import analyze_all, attached, detach, stop_if_aborted
from flows.logs import kimidocs_logs_to_run
from kimidocs.run import pipeline
from kimidocs.run import shards as fanout
from kimidocs.run.discover import FoundFile

SHARD_FLOW = "analyze-shard"
SHARD_DEPLOYMENT = "fan-out"
#: How often a shard is tried when its child run crashes (a dead worker) before its documents fail.
SHARD_ATTEMPTS = 3
POLL_S = 2.0
_CRASHED = {StateType.CRASHED}
_DONE = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


@flow(
    name=SHARD_FLOW,
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
    persist_result=True,
    log_prints=False,
)
def analyze_shard(run_id: str, options: pipeline.RunOptions, files: list[FoundFile]) -> pipeline.GroupResult:
    """A shard of an open run's documents, as the run's own flow would do them; returns their outcomes.

    Attaches to run `run_id` (opened by the parent `analyze-folder`); document failures are outcomes,
    not a failed run: the parent decides how the run ends.
    """
    logger = get_run_logger()
    with kimidocs_logs_to_run(runtime.flow_run.id):
        ctx = attached(run_id, options)
        logger.info("shard of %d file(s) of run %s", len(files), run_id)
        try:
            outcomes = analyze_all(ctx, files, max(1, options.concurrency))
            packs = ctx.packs.counts
        finally:
            detach(run_id)
    return pipeline.GroupResult(tuple(outcomes), packs)


@dataclass
class _Child:
    """One shard and the child run that does it."""

    files: list[FoundFile]
    flow_run_id: UUID
    attempts: int = 1
    result: pipeline.GroupResult | None = None
    crashes: list[str] = field(default_factory=list)


def fan_out(ctx: pipeline.RunContext, files: list[FoundFile], parts: int) -> list[pipeline.DocumentOutcome]:
    """The run's files in `parts` child runs of `analyze-shard`; their outcomes, settled by the store."""
    logger = get_run_logger()
    deployment = f"{SHARD_FLOW}/{SHARD_DEPLOYMENT}"
    children = []
    for number, shard in enumerate(fanout.split_files(files, parts), start=1):
        run = run_deployment(
            deployment,
            parameters={"run_id": ctx.run_id, "options": ctx.options, "files": shard},
            flow_run_name=f"{Path(ctx.options.folder).name}-shard-{number}",
            timeout=0,  # submit all, then wait for them together
        )
        children.append(_Child(shard, run.id))  # type: ignore[union-attr]
    logger.info("%d file(s) in %d child run(s) of %s", len(files), len(children), deployment)
    _wait(children)
    outcomes: list[list[pipeline.DocumentOutcome]] = []
    for child in children:
        if child.result is None:
            reason = f"child run {child.flow_run_id} did not finish: {'; '.join(child.crashes)}"
            outcomes.append(fanout.lost_shard(child.files, reason))
            continue
        ctx.packs.add(child.result.packs)
        outcomes.append(list(child.result.outcomes))
    found = pipeline.in_file_order(files, outcomes)
    stop_if_aborted(ctx, found)  # a child stopped by a wrong key or no quota stops the run, as in one process
    return fanout.settle(found, fanout.paid_by_run(ctx.store, ctx.run_id))


def _wait(children: list[_Child]) -> None:
    """Poll the children until each has a result or is given up; a Crashed child is run again."""
    logger = get_run_logger()
    waiting = {child.flow_run_id: child for child in children}
    with get_client(sync_client=True) as client:
        while waiting:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(waiting)))
            )
            for run in runs:
                child = waiting[run.id]
                state = run.state
                if state is None or state.type not in _DONE:
                    continue
                if state.type in _CRASHED and child.attempts < SHARD_ATTEMPTS:
                    child.crashes.append(state.message or "crashed")
                    child.attempts += 1
                    logger.warning(
                        "child run %s crashed (%s): running it again (attempt %d of %d)",
                        run.name,
                        state.message,
                        child.attempts,
                        SHARD_ATTEMPTS,
                    )
                    client.set_flow_run_state(run.id, Scheduled(message="kimidocs: shard re-run"), force=True)
                    continue
                child.result = _result_of(run, child)
                del waiting[run.id]
            if waiting:
                time.sleep(POLL_S)


def _result_of(run: FlowRun, child: _Child) -> pipeline.GroupResult | None:
    """The child's returned GroupResult, or None (its state says why) when it ended without one."""
    state = run.state
    if state is None or state.type != StateType.COMPLETED:
        child.crashes.append(f"{state.type.value if state else 'no state'}: {state.message if state else ''}")
        return None
    value = state.result(raise_on_failure=False)
    if not isinstance(value, pipeline.GroupResult):
        raise RuntimeError(
            f"child run {run.name} completed but its result could not be read ({value!r}): the parent must "
            "reach the children's result storage (PREFECT_RESULTS_LOCAL_STORAGE_PATH on shared storage)"
        )
    return value
