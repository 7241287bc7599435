"""The `kimidocs` command line. Each command lives in `kimidocs/commands/<name>.py` (the emulator's in
`kimidocs/emulator/command.py`) and registers itself through `register(app)`, so this file stays a
table of contents.

`main` is the console script: a mistake the user can fix (a bad setting, an unknown model or profile,
a database path that cannot work) ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from kimidocs.commands import analyze, ask, extract, models, plan, profiles, query, runs, serve, where
from kimidocs.emulator import command as emulator
from kimidocs.kimi.errors import MissingApiKey, RequestNotSendable
from kimidocs.run.discover import FolderError
from kimidocs.run.settings import ConfigError
from kimidocs.store import DatabaseUnusable, SchemaTooNew

app = typer.Typer(
    name="kimidocs",
    help="Long-document analysis with Kimi: PDFs and DOCX in, structured summaries in DuckDB out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _command in (analyze, ask, extract, plan, query, runs, where, models, profiles, emulator, serve):
    _command.register(app)

#: Errors that mean "change a setting or an argument": one line and exit 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    FolderError,
    DatabaseUnusable,
    SchemaTooNew,
    MissingApiKey,
    RequestNotSendable,
)


def main() -> None:
    """The console script."""
    try:
        app()
    except USAGE_ERRORS as err:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(err))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
