"""`kimidocs where fts|ducklake|postgres_scanner|search-index`: paths other tools need, e.g. an extension
for a plain DuckDB shell (DuckDB's own download does not work offline; kimidocs loads the copies shipped in
the `duckdb-extension-*` wheels), or a store's local full-text index file (kimidocs/store/search_index.py)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kimidocs.run.settings import load_settings
from kimidocs.store import Store, extension_path


class Thing(StrEnum):
    fts = "fts"
    ducklake = "ducklake"
    postgres_scanner = "postgres_scanner"
    search_index = "search-index"


def register(app: typer.Typer) -> None:
    @app.command("where")
    def where(
        thing: Annotated[
            Thing,
            typer.Argument(
                help="fts, ducklake or postgres_scanner: that extension's file; search-index: the store's "
                "local full-text index file (up to date after a `kimidocs search`)."
            ),
        ],
        db: Annotated[
            Path | None, typer.Option("--db", help="For search-index: the store (default: KIMIDOCS_DB).")
        ] = None,
    ) -> None:
        """Print the absolute path of THING, for `LOAD '<path>'` or opening it in your own DuckDB."""
        if thing is Thing.search_index:
            typer.echo(str(Store(db or load_settings().db, read_only=True).search_index().file))
            return
        typer.echo(str(extension_path(thing.value).resolve()))
