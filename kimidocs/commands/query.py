"""`kimidocs query`, `kimidocs search`, `kimidocs export`: the analysts' read-only doors into the store.

All three open the database read-only and wait while another process holds it: a running pipeline
lets them in between its short writes (well under a second), so they can be used during a run. A
longer wait is said on stderr (stdout stays the result) and lasts up to `--wait` seconds; only then,
with something holding the file that never lets go (an open DuckDB shell), do they fail.
"""

from __future__ import annotations

import csv
import decimal
import json
import sys
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kimidocs.run.settings import load_settings
from kimidocs.store import QueryResult, Store, StoreError

DbOption = Annotated[
    Path | None, typer.Option("--db", help="DuckDB file (default: KIMIDOCS_DB or data/kimidocs.duckdb).")
]
WAIT_S = 600.0
WaitOption = Annotated[
    float, typer.Option("--wait", help="Most seconds to wait while another process holds the database.")
]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class ExportFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def _store(db: Path | None, wait: float) -> Store:
    path = db or load_settings().db

    def waiting(waited: float) -> None:
        Console(stderr=True).print(
            f"[yellow]waiting for {path}: another process is writing to it "
            f"(a kimidocs run lets readers in between writes); giving up after {wait:.0f} s[/yellow]",
            soft_wrap=True,
            highlight=False,
        )

    return Store(path, read_only=True, lock_timeout_s=wait, on_wait=waiting)


def _fail(exc: StoreError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


def _plain(value: Any) -> Any:
    """A JSON-friendly version of what DuckDB returned (dates, decimals, structs, lists)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(_plain(value), ensure_ascii=False) if isinstance(value, list | dict) else str(value)


def render(result: QueryResult, fmt: Format, out: Any = None) -> None:
    """Write a query result to `out` (stdout) in one of the CLI formats."""
    out = out or sys.stdout
    if fmt is Format.json:
        rows = [dict(zip(result.columns, map(_plain, row), strict=True)) for row in result.rows]
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
    elif fmt is Format.markdown:
        esc = [c.replace("|", "\\|") for c in result.columns]
        out.write("| " + " | ".join(esc) + " |\n")
        out.write("|" + "---|" * len(esc) + "\n")
        for row in result.rows:
            cells = [_cell(v).replace("|", "\\|").replace("\n", " ") for v in row]
            out.write("| " + " | ".join(cells) + " |\n")
    else:
        table = Table(show_lines=False)
        for name in result.columns:
            table.add_column(name, overflow="fold")
        for row in result.rows:
            table.add_row(*[_cell(v) for v in row])
        console = _console(out)
        console.print(table)
        console.print(f"[dim]{len(result.rows)} row(s)[/dim]")


def _console(out: Any) -> Console:
    """The terminal's width on a terminal; without one (a pipe, a file, CI) a table keeps its natural
    width instead of being folded into rich's default 80 columns."""
    is_tty = getattr(out, "isatty", lambda: False)()
    return Console(file=out, width=None if is_tty else 10_000)


def register(app: typer.Typer) -> None:
    @app.command("query")
    def query(
        sql: Annotated[str, typer.Argument(help='One SQL statement, e.g. "SELECT * FROM latest_summaries".')],
        db: DbOption = None,
        fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
        wait: WaitOption = WAIT_S,
    ) -> None:
        """Run read-only SQL against the results database (tables and views: docs/SCHEMA.md)."""
        try:
            result = _store(db, wait).query(sql)
        except StoreError as exc:
            raise _fail(exc) from None
        render(result, fmt)

    @app.command("search")
    def search(
        terms: Annotated[str, typer.Argument(help="Words to look for in the pages' text (BM25 ranking).")],
        limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most hits to show.")] = 10,
        db: DbOption = None,
        fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
        wait: WaitOption = WAIT_S,
    ) -> None:
        """Full-text search over every stored page: document, page number, score and a snippet."""
        try:
            hits = _store(db, wait).search(terms, limit)
        except StoreError as exc:
            raise _fail(exc) from None
        result = QueryResult(
            ("path", "page_no", "score", "snippet", "doc_id"),
            ("VARCHAR", "INTEGER", "DOUBLE", "VARCHAR", "VARCHAR"),
            tuple(
                (
                    h.path,
                    h.page_no,
                    round(h.score, 4),
                    h.snippet,
                    h.doc_id[:12] if fmt is Format.table else h.doc_id,
                )
                for h in hits
            ),
        )
        render(result, fmt)

    @app.command("export")
    def export(
        directory: Annotated[Path, typer.Argument(help="Folder to write one file per table and view into.")],
        fmt: Annotated[
            ExportFormat, typer.Option("--format", "-f", help="File format.")
        ] = ExportFormat.parquet,
        db: DbOption = None,
        wait: WaitOption = WAIT_S,
    ) -> None:
        """Write every table and view to DIRECTORY as parquet (default) or csv."""
        try:
            written = _store(db, wait).export(directory, fmt.value)
        except StoreError as exc:
            raise _fail(exc) from None
        for path in written:
            typer.echo(str(path))
