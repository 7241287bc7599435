"""`kimidocs where fts|ducklake|postgres_scanner`: paths other tools need, e.g. an extension for a plain
DuckDB shell (DuckDB's own download does not work offline; kimidocs loads the copies shipped in the
`duckdb-extension-*` wheels)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from kimidocs.store import extension_path


class Thing(StrEnum):
    fts = "fts"
    ducklake = "ducklake"
    postgres_scanner = "postgres_scanner"


def register(app: typer.Typer) -> None:
    @app.command("where")
    def where(
        thing: Annotated[
            Thing, typer.Argument(help="fts, ducklake or postgres_scanner: that extension's file.")
        ],
    ) -> None:
        """Print the absolute path of THING, for `LOAD '<path>'` in your own DuckDB."""
        typer.echo(str(extension_path(thing.value).resolve()))
