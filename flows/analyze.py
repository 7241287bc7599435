"""Prefect shell around `kimidocs.pipeline`: one flow per folder, one task per document.

Task bodies are single calls into kimidocs; retries live in the Kimi client (one layer), so
Prefect task retries stay at 0 and never stack on top of them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.limits import limiter_for_run
from flows.logs import kimidocs_logs_to_run
from kimidocs import pipeline
from kimidocs.backend import is_loopback_url
from kimidocs.discover import FoundFile
from kimidocs.report import report_markdown
from kimidocs.settings import Settings, load_settings

# Open runs of this process by run id: tasks get the id (a string Prefect can record), not the
# context object with its locks, store and HTTP client.
_RUNS: dict[str, pipeline.RunContext] = {}


class DocumentFailed(Exception):
    """A document of this task ended `failed`: the task run ends Failed with the typed error as its
    message, so the Prefect UI shows red where a document failed. Carries the task's outcomes, so the
    flow still records every document (a pack's task returns several)."""

    def __init__(self, result: pipeline.BatchResult) -> None:
        self.result = result
        failed = [o for o in result.outcomes if o.status == "failed"]
        super().__init__("; ".join(f"{Path(o.path).name}: {o.error_type}: {o.message}" for o in failed))

    def __reduce__(self) -> tuple[type[DocumentFailed], tuple[pipeline.BatchResult]]:
        return (DocumentFailed, (self.result,))


def _finish_task(result: pipeline.BatchResult) -> pipeline.BatchResult:
    _log_outcomes(result.outcomes)
    if any(o.status == "failed" for o in result.outcomes):
        raise DocumentFailed(result)
    return result


@task(name="analyze-document", retries=0, cache_policy=NO_CACHE)
def analyze_document(run_id: str, files: list[FoundFile]) -> pipeline.BatchResult:
    """A batch of documents end to end (extract, plan, calls, store); Failed when a document failed.

    One document, or with packing on a pack's worth: packed within the batch, flushed at its end.
    """
    return _finish_task(pipeline.analyze_batch(_RUNS[run_id], files))


def _batch_result(state_or_future: State | PrefectFuture) -> pipeline.BatchResult:
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


def with_secret_block_key(settings: Settings) -> Settings:
    """KIMI_API_KEY from the environment or `.env`, else from the Prefect Secret block named by
    KIMIDOCS_PREFECT_SECRET_BLOCK (so a work pool's workers need no key in their environment)."""
    if settings.api_key_value() or not settings.prefect_secret_block:
        return settings
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    value = Secret.load(settings.prefect_secret_block).get()
    return settings.model_copy(update={"kimi_api_key": SecretStr(str(value))})


class EmulatorNotAllowed(RuntimeError):
    """A deployment run without KIMI_API_KEY: fail fast instead of quietly summarising with the emulator."""


def require_backend(settings: Settings) -> None:
    """A worker needs KIMI_API_KEY, unless it is told the emulator is fine.

    The CLI falls back to the emulator on purpose and says so on screen; an unattended worker has no
    screen, so a forgotten key must stop the run at once instead of filling the DB with emulated rows.
    Allowed without a key: KIMIDOCS_ALLOW_EMULATOR=1, or KIMI_BASE_URL on loopback (a local emulator).
    """
    if settings.api_key_value() or is_loopback_url(settings.kimi_base_url):
        return
    if settings.allow_emulator:
        return
    raise EmulatorNotAllowed(
        "KIMI_API_KEY is not set in this worker's environment. Set KIMI_API_KEY (e.g. in the worker's "
        "environment or the work pool's job variables), or set KIMIDOCS_ALLOW_EMULATOR=1 to run against "
        "the built-in Kimi emulator (rows are marked backend='emulator')."
    )


def _analyze_all(
    ctx: pipeline.RunContext, files: list[FoundFile], limit: int
) -> list[pipeline.DocumentOutcome]:
    """At most `limit` batches in flight, like `run_folder`'s pool, so `concurrency` means the same.

    Without this the task runner's 4 threads would start 4 documents even at concurrency 1, and a wrong
    key would be sent 4 times before the first 401 stops the run.
    """
    slots = threading.BoundedSemaphore(limit)
    futures = []
    for batch in pipeline.batches(ctx, files):
        slots.acquire()
        name = Path(batch[0].path).name + (f" (+{len(batch) - 1} more)" if len(batch) > 1 else "")
        future = analyze_document.with_options(task_run_name=f"analyze {name}").submit(ctx.run_id, batch)
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    results = [_batch_result(future) for future in futures]
    for result in results:
        ctx.packs.add(result.packs)
    return pipeline.in_file_order(files, (result.outcomes for result in results))


def _observer(event: str, data: dict) -> None:
    if event == "run_started":
        get_run_logger().info(
            "run %s: backend=%s model=%s db=%s", data["run_id"], data["backend"], data["model"], data["db"]
        )


@flow(name="analyze-folder", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def analyze_folder(
    folder: str = "data/inbox",
    profile: str = "summary",
    model: str | None = None,
    db: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    max_cost_usd: float | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    force: bool = False,
    pack: bool | None = None,
    fail_on_document_errors: bool = True,
) -> dict | State:
    """Analyse every document under `folder` and write the results to DuckDB.

    The run ends Failed when a document failed (each failed document's task run is Failed too, with
    its typed error), as `kimidocs analyze` exits 1; `fail_on_document_errors=false` is for folders
    where failures are expected: the run then ends Completed and the report lists them.
    """
    logger = get_run_logger()
    if not Path(folder).exists():  # one clear line in the run's state, no engine traceback
        return Failed(message=f"folder does not exist: {folder} (resolved: {Path(folder).resolve()})")
    with kimidocs_logs_to_run(runtime.flow_run.id):
        settings = with_secret_block_key(load_settings())
        require_backend(settings)
        # With a Prefect server every worker shares the account's limits through global limits.
        limiter = limiter_for_run(settings.tier, shared=settings.shared_limits)
        if limiter is not None:
            logger.info("Kimi limits shared through Prefect: %r", limiter)
        flow_run_id = runtime.flow_run.id
        options = pipeline.RunOptions(
            folder=folder,
            profile=profile,
            model=model,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            max_cost_usd=max_cost_usd,
            dry_run=dry_run,
            concurrency=concurrency,
            force=force,
            db=db,
            flow_run_id=str(flow_run_id) if flow_run_id else None,
            pack=pack,
        )
        ctx = pipeline.open_run(options, settings, observer=_observer, limiter=limiter)
        _RUNS[ctx.run_id] = ctx
        try:
            files = pipeline.list_files(ctx)
            logger.info("found %d files in %s", len(files), folder)
            outcomes = _analyze_all(ctx, files, max(1, concurrency))
        except BaseException as err:
            pipeline.abandon_run(ctx, err)
            raise
        finally:
            _RUNS.pop(ctx.run_id, None)
        report = pipeline.close_run(ctx, outcomes)
        create_markdown_artifact(
            key="kimidocs-run-report",
            markdown=report_markdown(report),
            description=f"kimidocs run {report.run_id}",
        )
        if report.status == "stopped":
            raise RuntimeError(f"run stopped: {report.message}")
        summary = {
            "run_id": report.run_id,
            "backend": report.backend,
            "ok": report.count("ok"),
            "unchanged": report.count("unchanged"),
            "failed": report.count("failed"),
            "skipped": report.count("skipped"),
            "cost_usd": round(report.cost_usd, 6),
        }
        failed = [o for o in report.outcomes if o.status == "failed"]
        if failed and fail_on_document_errors:
            names = ", ".join(f"{Path(o.path).name} ({o.error_type})" for o in failed[:10])
            more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
            return Failed(
                message=f"{len(failed)} of {len(report.outcomes)} documents failed: {names}{more}. "
                "See the kimidocs-run-report artifact; fail_on_document_errors=false accepts failures.",
                data=summary,
            )
        return summary
