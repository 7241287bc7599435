"""`kimidocs serve`: both deployments (nightly + adhoc) from one long-running process, no work pool.

The core never imports the Prefect shell: this command replaces itself with `python -m flows.serve`
(same options), so the rest of the CLI starts fast and the process that serves is Prefect's own.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer


def serve_argv(
    folder: str, cron: str, profile: str, db: str | None, limit: int | None, setup_only: bool
) -> list[str]:
    """The command line of the Prefect shell's `serve` for these options."""
    argv = [sys.executable, "-m", "flows.serve", "--folder", folder, "--cron", cron, "--profile", profile]
    if db is not None:
        argv += ["--db", db]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if setup_only:
        argv.append("--setup-only")
    return argv


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
    argv = serve_argv(folder, cron, profile, db, limit, setup_only)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # signals (SIGTERM from a service manager) then reach the server directly


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
