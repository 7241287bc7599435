"""The document tasks both flows use: `analyze-folder` runs them in its own task runner, each
`analyze-shard` child of a fanned-out run runs them for its shard (flows/fanout.py). A task gets the run id,
the run's options and a group of files, and opens what it needs itself (`pipeline.attach_run`: settings,
store, backend, limiter), so tasks run under any task runner, in any process. A group is one document, or
with packing on a pack's worth, packed and flushed within the task: no state crosses tasks.

Task bodies are single calls into kimidocs; retries live in the Kimi client (one layer), so Prefect
task retries stay at 0 and never stack on top of them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import State

from flows.logs import kimidocs_logs_to_run
from flows.prefect_limits import limiter_for_run
from kimidocs.core.paths import shown
from kimidocs.core.records import Stage
from kimidocs.run import pipeline
from kimidocs.run.backend import require_backend, with_key_from_secret
from kimidocs.run.discover import FoundFile
from kimidocs.run.settings import Settings, load_settings


class DocumentFailed(Exception):
    """A document of this task ended `failed`: the task run ends Failed with the typed error as its
    message, so the Prefect UI shows red where a document failed. Carries the task's result, so the
    flow still records every document (a group's task returns several)."""

    def __init__(self, result: pipeline.GroupResult) -> None:
        self.result = result
        failed = [o for o in result.outcomes if o.status == "failed"]
        super().__init__("; ".join(f"{Path(o.path).name}: {o.error_type}: {o.message}" for o in failed))

    def __reduce__(self) -> tuple[type[DocumentFailed], tuple[pipeline.GroupResult]]:
        return (DocumentFailed, (self.result,))


def _load_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())  # type: ignore[union-attr]


def with_secret_block_key(settings: Settings) -> Settings:
    """KIMI_API_KEY from the environment or `.env`, else from the Prefect Secret block named by
    KIMIDOCS_PREFECT_SECRET_BLOCK (so a work pool's workers need no key in their environment)."""
    return with_key_from_secret(settings, _load_secret_block)


def worker_settings() -> Settings:
    """The settings of a flow or task process: the key (maybe from a Secret block), checked."""
    settings = with_secret_block_key(load_settings())
    require_backend(settings)
    return settings


# Contexts attached by this process, by run id: a cache any process rebuilds from the run id (the live
# run is the `runs` row), kept so the documents of a run in one process share one limiter and client.
progress_log = logging.getLogger("kimidocs.progress")

_ATTACHED: OrderedDict[str, pipeline.RunContext] = OrderedDict()
_ATTACHED_LOCK = threading.Lock()
_ATTACHED_MAX = 4


def attached(run_id: str, options: pipeline.RunOptions) -> pipeline.RunContext:
    """This process's context for run `run_id`, attached on first use."""
    with _ATTACHED_LOCK:
        ctx = _ATTACHED.get(run_id)
        if ctx is None:
            settings = worker_settings()
            limiter = limiter_for_run(settings)
            ctx = pipeline.attach_run(run_id, options, settings, limiter=limiter, observer=TaskProgress())
            _ATTACHED[run_id] = ctx
            while len(_ATTACHED) > _ATTACHED_MAX:
                pipeline.detach_run(_ATTACHED.popitem(last=False)[1])
        _ATTACHED.move_to_end(run_id)
        return ctx


def detach(run_id: str) -> None:
    """Close this process's context for `run_id`, if it attached one."""
    with _ATTACHED_LOCK:
        ctx = _ATTACHED.pop(run_id, None)
    if ctx is not None:
        pipeline.detach_run(ctx)


@task(name="analyze-document", retries=0, cache_policy=NO_CACHE)
def analyze_document(
    run_id: str, options: pipeline.RunOptions, files: list[FoundFile]
) -> pipeline.GroupResult:
    """A group of documents end to end (extract, plan, calls, store); Failed when a document failed.

    One document, or with packing on a pack's worth: packed within the group, flushed at its end.
    Runs in any process: what it needs is opened from the run id and the options.
    """
    logger = get_run_logger()
    with kimidocs_logs_to_run(runtime.flow_run.id):
        logger.info("%d file(s) of run %s in process %d", len(files), run_id, os.getpid())
        result = pipeline.analyze_group(attached(run_id, options), files)
    _log_outcomes(result.outcomes)
    if any(o.status == "failed" for o in result.outcomes):
        raise DocumentFailed(result)
    return result


def _group_result(state_or_future: State | PrefectFuture) -> pipeline.GroupResult:
    """A document task's result, whether it ended Completed or Failed with `DocumentFailed`; any other
    failure (a bug, a store error) is raised and fails the flow run."""
    value = state_or_future.result(raise_on_failure=False)
    if isinstance(value, DocumentFailed):
        return value.result
    if isinstance(value, BaseException):
        raise value
    return value


def _log_outcomes(outcomes: tuple[pipeline.DocumentOutcome, ...]) -> None:
    logger = get_run_logger()
    for outcome in outcomes:
        if outcome.status == "failed":
            logger.warning("%s failed: %s: %s", outcome.path, outcome.error_type, outcome.message)
        else:
            logger.info(
                "%s: %s (%d calls, $%.5f)", outcome.path, outcome.status, outcome.calls, outcome.cost_usd
            )


def stop_if_aborted(ctx: pipeline.RunContext, outcomes: Iterable[pipeline.DocumentOutcome]) -> None:
    """A document stopped by a wrong key or no quota (`RunAborted`) stops the whole run from starting more."""
    for outcome in outcomes:
        if outcome.error_type == "RunAborted" and outcome.status == "failed":
            ctx.abort(outcome.message or "run aborted")


def analyze_all(
    ctx: pipeline.RunContext, files: list[FoundFile], limit: int
) -> list[pipeline.DocumentOutcome]:
    """At most `limit` groups in flight, like `run_folder`'s pool, so `concurrency` means the same.

    Without this the task runner's 4 threads would start 4 documents even at concurrency 1, and a wrong
    key would be sent 4 times before the first 401 stops the run. A task that stopped the run (a wrong
    key, no quota: `RunAborted`) stops the flow from starting more.
    """
    slots = threading.BoundedSemaphore(limit)
    futures = []
    skipped: list[pipeline.DocumentOutcome] = []

    def done(future: PrefectFuture) -> None:
        try:
            if not ctx.aborted.is_set():
                stop_if_aborted(ctx, _group_result(future).outcomes)
        except BaseException:  # the flow raises it when it collects this future
            pass
        finally:
            slots.release()

    for group in pipeline.groups(ctx, files):
        slots.acquire()
        if ctx.aborted.is_set():
            skipped += [pipeline.skipped_by_abort(ctx, found) for found in group]
            slots.release()
            continue
        name = Path(group[0].path).name + (f" (+{len(group) - 1} more)" if len(group) > 1 else "")
        future = analyze_document.with_options(task_run_name=f"analyze {name}").submit(
            ctx.run_id, ctx.options, group
        )
        future.add_done_callback(done)
        futures.append(future)
    results = [_group_result(future) for future in futures]
    for result in results:
        ctx.packs.add(result.packs)
    return pipeline.in_file_order(files, [*(result.outcomes for result in results), skipped])


class TaskProgress(pipeline.QuietObserver):
    """Progress inside a document task, in the run's logs: pages extracted (at every tenth of the
    document), the plan, and map-reduce calls (at every tenth of the plan). Through the `kimidocs.progress`
    logger, which `kimidocs_logs_to_run` ships to the flow run from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.steps: dict[tuple[str, str], int] = {}
        self.calls: dict[str, list[int]] = {}

    def _tenth(self, key: tuple[str, str], done: int, total: int) -> bool:
        step = (10 * done) // max(total, 1)
        with self.lock:
            if self.steps.get(key, -1) >= step:
                return False
            self.steps[key] = step
            return True

    def extract_progress(self, path: str, done: int, total: int) -> None:
        if total > 1 and self._tenth((path, "pages"), done, total):
            progress_log.info("%s: %d/%d pages extracted", shown(Path(path).name), done, total)

    def document_planned(self, path: str, strategy: str, calls: int) -> None:
        with self.lock:
            self.calls[path] = [0, calls]
        progress_log.info("%s: planned %s, %d call(s)", shown(Path(path).name), strategy, calls)

    def document_call(self, path: str, stage: Stage) -> None:
        with self.lock:
            done_total = self.calls.setdefault(path, [0, 1])
            done_total[0] += 1
            done, total = done_total[0], max(done_total)
        if total > 1 and self._tenth((path, "calls"), done, total):
            progress_log.info("%s: %d/%d calls done (last: %s)", shown(Path(path).name), done, total, stage)
