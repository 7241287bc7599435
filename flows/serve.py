"""`python -m flows.serve` (what `kimidocs serve` execs): the deployments served from one process, and
the server-side objects a kimidocs deployment wants besides them: the shared Kimi limits and the
zombie-run automation.

A worker that is SIGKILLed (OOM killer, reboot) cannot report its flow run, which then stays Running on
the server forever; open-source Prefect ships no automation for that. This creates the one from Prefect's
docs (detect-zombie-flows): no heartbeat and no terminal event within `within` after a heartbeat ->
the run is marked Crashed. Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY (180 s by
default), so `within` must be a few heartbeats long (540 s by default).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

ZOMBIE_AUTOMATION = "kimidocs-crash-zombie-flow-runs"


def ensure_zombie_automation(within_s: float = 540.0) -> bool:
    """Create the automation unless one with our name exists; True when it was created."""
    try:
        Automation.read(name=ZOMBIE_AUTOMATION)  # type: ignore[unused-coroutine]
        return False
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Mark flow runs Crashed when their heartbeats stop (worker killed).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="Flow run marked as crashed due to missing heartbeats."
            )
        ],
    ).create()
    return True


def serve_deployments(deployments: list, *, limit: int | None = None) -> None:
    """Serve the given deployments from this process until SIGTERM (Prefect's `serve`)."""
    from prefect import serve

    serve(*deployments, limit=limit)


def serve(
    folder: Annotated[str, typer.Option(help="Folder of the nightly run (ad hoc default).")] = "data/inbox",
    cron: Annotated[str, typer.Option(help="Schedule of analyze-folder/nightly (UTC).")] = "0 2 * * *",
    profile: Annotated[str, typer.Option(help="Default prompt profile of both deployments.")] = "summary",
    db: Annotated[str | None, typer.Option(help="Default DuckDB file of both deployments.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many flow runs at once.")] = None,
    setup_only: Annotated[
        bool,
        typer.Option(
            "--setup-only",
            help="Create the shared Kimi limits and the zombie-run automation on the server, then exit "
            "(for pool + worker setups).",
        ),
    ] = False,
) -> None:
    """Serve analyze-folder/nightly and analyze-folder/adhoc until stopped (SIGTERM pauses the schedule)."""
    from flows.deployments import build_deployments
    from flows.prefect_limits import ensure_limits, prefect_server_configured
    from kimidocs.kimi.limits import RateLimits
    from kimidocs.run.backend import EmulatorNotAllowed, require_backend
    from kimidocs.run.settings import load_settings

    settings = load_settings()
    try:
        if not setup_only:  # the processes that run flows need the key; setting up the server does not
            require_backend(settings)
    except EmulatorNotAllowed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if prefect_server_configured():
        created = ensure_limits(RateLimits.for_tier(settings.tier))
        if created:
            typer.echo(f"created Prefect limits for {settings.tier}: {', '.join(created)}")
        if ensure_zombie_automation():
            typer.echo("created the automation that marks flow runs Crashed when their heartbeats stop")
    elif setup_only:
        typer.echo("error: --setup-only needs a Prefect server: set PREFECT_API_URL", err=True)
        raise typer.Exit(2)
    else:
        typer.echo(
            "warning: PREFECT_API_URL is not set: serving against a temporary Prefect server that lives only "
            "as long as this process (no UI, no shared limits). Start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api for schedules you can watch.",
            err=True,
        )
    if setup_only:
        return
    parameters = {"profile": profile, **({"db": db} if db else {})}
    deployments = build_deployments(folder=folder, cron=cron, parameters=parameters)
    serve_deployments(deployments, limit=limit)


if __name__ == "__main__":
    typer.run(serve)
