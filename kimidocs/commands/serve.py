"""`kimidocs serve`: both deployments (nightly + adhoc) from one long-running process, no work pool.

Imports `flows` (and so Prefect) only when the command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer


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
    from flows.analyze import EmulatorNotAllowed, require_backend
    from flows.deployments import build_deployments
    from flows.limits import ensure_limits, prefect_server_configured
    from flows.serve import ensure_zombie_automation, serve_deployments
    from kimidocs.kimi.limits import RateLimits
    from kimidocs.settings import load_settings

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


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
