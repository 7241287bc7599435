"""`kimidocs where fts`: paths other tools need, e.g. the fts extension for a plain DuckDB shell (DuckDB's
own download does not work offline; kimidocs loads the copy shipped in the `duckdb-extension-fts` wheel)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from kimidocs.store import fts_extension_path


class Thing(StrEnum):
    fts = "fts"


def register(app: typer.Typer) -> None:
    @app.command("where")
    def where(
        thing: Annotated[Thing, typer.Argument(help="fts: the full-text-search extension file.")],
    ) -> None:
        """Print the absolute path of THING, for `LOAD '<path>'` in your own DuckDB."""
        if thing is Thing.fts:
            typer.echo(str(fts_extension_path().resolve()))
