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
from prefect.task_runners import ThreadPoolTaskRunner

from flows.limits import limiter_for_run
from kimidocs import pipeline
from kimidocs.backend import is_loopback_url
from kimidocs.discover import FoundFile
from kimidocs.report import report_markdown
from kimidocs.settings import Settings, load_settings

# Open runs of this process by run id: tasks get the id (a string Prefect can record), not the
# context object with its locks, store and HTTP client.
_RUNS: dict[str, tuple[pipeline.RunContext, pipeline.Packer | None]] = {}


@task(name="analyze-document", retries=0, cache_policy=NO_CACHE)
def analyze_document(run_id: str, found: FoundFile) -> list[pipeline.DocumentOutcome]:
    """One document end to end (extract, plan, calls, store).

    With packing on, a small document may wait for its pack (no outcome yet) or fill one, and then
    the outcomes of every document in that pack come back from this task.
    """
    outcomes = pipeline.analyze_in_folder(*_RUNS[run_id], found)
    _log_outcomes(outcomes)
    return outcomes


@task(name="send-remaining-packs", retries=0, cache_policy=NO_CACHE)
def send_remaining_packs(run_id: str) -> list[pipeline.DocumentOutcome]:
    """The last, partly filled pack, once every document went through `analyze_document`."""
    _ctx, packer = _RUNS[run_id]
    outcomes = packer.flush() if packer is not None else []
    _log_outcomes(outcomes)
    return outcomes


def _log_outcomes(outcomes: list[pipeline.DocumentOutcome]) -> None:
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


def _analyze_all(run_id: str, files: list[FoundFile], limit: int) -> list[pipeline.DocumentOutcome]:
    """At most `limit` documents in flight, like `run_folder`'s pool, so `concurrency` means the same.

    Without this the task runner's 4 threads would start 4 documents even at concurrency 1, and a wrong
    key would be sent 4 times before the first 401 stops the run.
    """
    slots = threading.BoundedSemaphore(limit)
    futures = []
    for found in files:
        slots.acquire()
        future = analyze_document.with_options(task_run_name=f"analyze {Path(found.path).name}").submit(
            run_id, found
        )
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    batches = [future.result() for future in futures]
    if _RUNS[run_id][1] is not None:  # no empty task run when packing is off
        batches.append(send_remaining_packs(run_id))
    return pipeline.in_file_order(files, batches)


def _observer(event: str, data: dict) -> None:
    if event == "run_started":
        get_run_logger().info(
            "run %s: backend=%s model=%s db=%s", data["run_id"], data["backend"], data["model"], data["db"]
        )
    elif event == "run_waiting":
        get_run_logger().warning("%s", data["message"])


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
) -> dict:
    """Analyse every document under `folder` and write the results to DuckDB."""
    logger = get_run_logger()
    if not Path(folder).exists():
        raise FileNotFoundError(f"folder does not exist: {folder} (resolved: {Path(folder).resolve()})")
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
    _RUNS[ctx.run_id] = (ctx, pipeline.packer_for(ctx))
    try:
        files = pipeline.list_files(ctx)
        logger.info("found %d files in %s", len(files), folder)
        outcomes = _analyze_all(ctx.run_id, files, max(1, concurrency))
    except BaseException:
        pipeline.release_run(ctx)
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
    return {
        "run_id": report.run_id,
        "backend": report.backend,
        "ok": report.count("ok"),
        "unchanged": report.count("unchanged"),
        "failed": report.count("failed"),
        "skipped": report.count("skipped"),
        "cost_usd": round(report.cost_usd, 6),
    }
