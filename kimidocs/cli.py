"""The `kimidocs` command line. Each command lives in `kimidocs/commands/<name>.py` and
registers itself through `register(app)`, so this file stays a table of contents."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="kimidocs",
    help="Long-document analysis with Kimi: PDFs and DOCX in, structured summaries in DuckDB out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("analyze", "extract", "plan", "query", "models", "emulator", "serve")

for _name in COMMAND_MODULES:
    importlib.import_module(f"kimidocs.commands.{_name}").register(app)


if __name__ == "__main__":
    app()
