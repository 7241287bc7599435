"""`kimidocs serve`: both deployments (nightly + adhoc) from one long-running process, no work pool.

The core never imports the Prefect shell: this command replaces itself with `python -m flows.serve`,
passing every argument through (`--help` included), so the options are declared once, in
`flows/serve.py`, the rest of the CLI starts fast, and the process that serves is Prefect's own.
"""

from __future__ import annotations

import os
import sys

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def serve(ctx: typer.Context) -> None:
    """Serve analyze-folder/nightly and analyze-folder/adhoc until stopped (`kimidocs serve --help`)."""
    argv = [sys.executable, "-m", "flows.serve", *ctx.args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # signals (SIGTERM from a service manager) then reach the server directly


def register(app: typer.Typer) -> None:
    app.command("serve", context_settings=PASS_THROUGH, add_help_option=False)(serve)
