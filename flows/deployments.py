"""The deployments, as Python objects for `serve` (prefect.yaml has the same three).

`analyze-folder/nightly` and `analyze-folder/adhoc` analyse a folder; `analyze-shard/fan-out` is what an
`analyze-folder` run with `fan_out` starts once per shard (flows/fanout.py), on any worker of the pool.

`prefect.yaml` is what `prefect deploy --all` reads for a work pool and workers; `kimidocs serve` uses
these objects instead, for a single always-on process without a pool. Names, schedule and default
folder are constants here so both stay in step (a test compares them).
"""

from __future__ import annotations

from typing import Any

from prefect.deployments.runner import RunnerDeployment

from flows.analyze import analyze_folder
from flows.fanout import SHARD_DEPLOYMENT, analyze_shard

FLOW_NAME = "analyze-folder"
NIGHTLY = "nightly"
ADHOC = "adhoc"
NIGHTLY_CRON = "0 2 * * *"
TIMEZONE = "UTC"
INBOX = "data/inbox"
WORK_POOL = "kimidocs"
NIGHTLY_MODE = "batch"  # Kimi's Batch API at 60 % of the price; interactive where unsupported
NIGHTLY_BATCH_WAIT_S = 600  # then the batch is handed to a follow-up run: no worker waits for hours


def build_deployments(
    *, folder: str = INBOX, cron: str = NIGHTLY_CRON, parameters: dict[str, Any] | None = None
) -> list[RunnerDeployment]:
    """`analyze-folder/nightly` (cron), `analyze-folder/adhoc` (no schedule) and `analyze-shard/fan-out`
    (fan-out children) for `prefect.serve`.

    `parameters` are defaults for both (e.g. a profile or a db); `folder` is the nightly one's folder
    and the ad hoc one's default.
    """
    base = {"folder": folder, **(parameters or {})}
    nightly = analyze_folder.to_deployment(
        name=NIGHTLY,
        cron=cron,
        parameters={"mode": NIGHTLY_MODE, "batch_wait_s": NIGHTLY_BATCH_WAIT_S, **base},
        tags=["kimidocs"],
        description=f"Analyse every new or changed document in {folder}, on '{cron}' ({TIMEZONE}).",
    )
    for schedule in nightly.schedules or []:  # type: ignore[union-attr]
        # to_deployment(cron=...) leaves the timezone to the server's default; pin it like prefect.yaml.
        if getattr(schedule.schedule, "timezone", None) is None:
            schedule.schedule.timezone = TIMEZONE  # type: ignore[union-attr]
    adhoc = analyze_folder.to_deployment(
        name=ADHOC,
        parameters=base,
        tags=["kimidocs"],
        description="Analyse a folder on demand: deployment run analyze-folder/adhoc --param folder=...",
    )
    shard = analyze_shard.to_deployment(
        name=SHARD_DEPLOYMENT,
        tags=["kimidocs"],
        description="A shard of an analyze-folder run with fan_out (started by that run, not by hand).",
    )
    return [nightly, adhoc, shard]  # type: ignore[list-item]
