"""`kimidocs runs [RUN_ID]`: what the recent runs did, and one run's failures and costliest documents,
read from DuckDB (the same numbers the Prefect artifact shows, for runs of any age and any machine)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from kimidocs.commands.query import DbOption, Format, WaitOption, _fail, _store, render
from kimidocs.store import QueryResult, StoreError
from kimidocs.store.run_queries import (
    COSTLIEST_SQL,
    FAILURES_SQL,
    ONE_SQL,
    RECENT_SQL,
    RunNotFound,
    resolve_run_id,
)


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs(
        run_id: Annotated[str | None, typer.Argument(help="A run id (or its first characters).")] = None,
        limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to list.")] = 20,
        db: DbOption = None,
        fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
        wait: WaitOption = 15.0,
    ) -> None:
        """Recent runs with their state, counts, cost and duration; or one run's failures and costliest
        documents."""
        store = _store(db, wait)
        try:
            if run_id is None:
                render(store.query(RECENT_SQL, [limit]), fmt)
                return
            full = resolve_run_id(store, run_id)
            sections = {
                "run": store.query(ONE_SQL, [full]),
                "failures": store.query(FAILURES_SQL, [full]),
                "costliest documents": store.query(COSTLIEST_SQL, [full, limit]),
            }
        except StoreError as exc:
            raise _fail(exc) from None
        for title, result in sections.items():
            if fmt is Format.table:
                Console().print(f"\n[bold]{title}[/bold]")
            render(_vertical(result) if title == "run" and fmt is Format.table else result, fmt)


def _vertical(result: QueryResult) -> QueryResult:
    """One row as `field | value` lines: a run has too many columns for one table row."""
    row = result.rows[0] if result.rows else ()
    return QueryResult(
        ("field", "value"),
        ("VARCHAR", "VARCHAR"),
        tuple(
            (name, "" if value is None else str(value))
            for name, value in zip(result.columns, row, strict=False)
        ),
    )


__all__ = ["RunNotFound", "register", "resolve_run_id"]
