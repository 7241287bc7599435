"""Prefect shell around `kimidocs.run.pipeline`: one flow per folder, one task per document (or group).

The flow opens the run (its `runs` row and the database's run lock) and closes it; the documents go to
the tasks of flows/documents.py, here or (`fan_out`) in `analyze-shard` child runs (flows/fanout.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.documents import analyze_all, detach, worker_settings
from flows.fanout import fan_out as spread
from flows.logs import kimidocs_logs_to_run
from flows.prefect_limits import limiter_for_run
from kimidocs.run import pipeline
from kimidocs.run.report import report_markdown


def _collect_later(after_s: float) -> None:
    """Schedule a run of this flow run's deployment, with its parameters, `after_s` from now: it collects
    the batch this run handed over (a rerun over the folder resumes stored batches). Outside a deployment
    only a log line: the next run over the folder collects it."""
    logger = get_run_logger()
    deployment = runtime.deployment.name
    if not deployment:
        logger.info("a batch is still running: the next run over this folder collects it")
        return
    when = datetime.now(UTC) + timedelta(seconds=after_s)
    follow_up = run_deployment(
        f"{runtime.flow_run.flow_name}/{deployment}",
        parameters=dict(runtime.flow_run.parameters),
        scheduled_time=when,
        timeout=0,
        as_subflow=False,
        tags=["kimidocs", "batch-follow-up"],
    )
    logger.info(
        "a batch is still running: follow-up flow run %s at %s collects it; no worker waits meanwhile",
        follow_up.id,  # type: ignore[union-attr]
        when.isoformat(timespec="seconds"),
    )


class _FlowLog(pipeline.QuietObserver):
    """The run's start in the flow run's log (documents are logged by their tasks)."""

    def run_started(self, info: pipeline.RunStarted) -> None:
        get_run_logger().info(
            "run %s: backend=%s model=%s db=%s", info.run_id, info.backend, info.model, info.db
        )
        if info.model_note:
            get_run_logger().warning("%s", info.model_note)


@flow(name="analyze-folder", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)  # type: ignore[arg-type]
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
    mode: str = "interactive",
    questions: list[str] | None = None,
    batch_wait_s: float | None = None,
    batch_recheck_s: float = 1800.0,
    fan_out: int | None = None,
) -> dict | State:
    """Analyse every document under `folder` and write the results to DuckDB.

    With `questions`, every document answers them instead (as `kimidocs ask`: cited answers in the
    `questions` table, the document read from the prefix cache by questions 2..N).

    In batch mode with `batch_wait_s`, the flow waits at most that long for a batch; a batch still running
    then is handed over (its documents `skipped`, BatchPending) and, when this run came from a deployment,
    a follow-up run of the same deployment is scheduled `batch_recheck_s` later to collect it: hours of
    batch processing hold no worker slot (the batch id is in DuckDB; nothing is submitted twice).

    The run ends Failed when a document failed (each failed document's task run is Failed too, with
    its typed error), as `kimidocs analyze` exits 1; `fail_on_document_errors=false` is for folders
    where failures are expected: the run then ends Completed and the report lists them.

    `fan_out=N` spreads the documents over N child runs of `analyze-shard` (any worker of the pool runs
    them); this run still opens and closes the one run (flows/fanout.py). Default: all in this process.
    """
    logger = get_run_logger()
    if fan_out is not None and fan_out < 1:
        return Failed(message=f"fan_out must be 1 or more (child runs), not {fan_out}")
    if not Path(folder).exists():  # one clear line in the run's state, no engine traceback
        return Failed(message=f"folder does not exist: {folder} (resolved: {Path(folder).resolve()})")
    with kimidocs_logs_to_run(runtime.flow_run.id):
        settings = worker_settings()
        if batch_wait_s is not None:
            settings = settings.model_copy(update={"batch_timeout_s": batch_wait_s})
        # With a Prefect server every worker shares the account's limits through global limits.
        limiter = limiter_for_run(settings)
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
            mode=mode,
            questions=tuple(questions or ()),
        )
        ctx = pipeline.open_run(options, settings, observer=_FlowLog(), limiter=limiter)
        try:
            files = pipeline.list_files(ctx)
            logger.info("found %d files in %s", len(files), folder)
            if mode == "batch" and not dry_run:  # rounds of Batch API jobs, in this process
                if fan_out is not None:
                    logger.warning("fan_out is for interactive runs: batch mode runs its rounds here")
                outcomes = pipeline.run_batch_mode(ctx, files)
            elif fan_out is not None and not dry_run:
                outcomes = spread(ctx, files, fan_out)
            else:
                outcomes = analyze_all(ctx, files, max(1, concurrency))
        except BaseException as err:
            pipeline.abandon_run(ctx, err)
            raise
        finally:
            detach(ctx.run_id)  # this process's task context, when a task ran here
        report = pipeline.close_run(ctx, outcomes)
        create_markdown_artifact(
            key="kimidocs-run-report",
            markdown=report_markdown(report),
            description=f"kimidocs run {report.run_id}",
        )
        if report.status == "stopped":
            raise RuntimeError(f"run stopped: {report.message}")
        if pipeline.batch_pending(list(report.outcomes)):
            _collect_later(batch_recheck_s)
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
