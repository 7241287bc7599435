"""`kimidocs runs [RUN_ID]`: what the recent runs did, and one run's failures and costliest documents,
read from DuckDB (the same numbers the Prefect artifact shows, for runs of any age and any machine)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from kimidocs.commands.query import DbOption, Format, WaitOption, _fail, _store, render
from kimidocs.store import QueryResult, Store, StoreError

RECENT_SQL = """
SELECT left(run_id, 12) AS run, strftime(started_at, '%Y-%m-%d %H:%M') AS started, status,
       documents_ok AS ok, documents_skipped AS skipped, documents_failed AS failed, calls,
       round(cost_usd, 4) AS cost_usd, round(duration_s, 1) AS seconds, model, backend, folder
FROM run_costs ORDER BY started_at DESC LIMIT ?
"""
ONE_SQL = """
SELECT run_id, flow_run_id, started_at, finished_at, round(duration_s, 1) AS seconds, status, folder, profile,
       model, backend, documents_ok AS ok, documents_skipped AS skipped, documents_failed AS failed, calls,
       failed_calls, prompt_tokens, cached_tokens, completion_tokens, round(cost_usd, 6) AS cost_usd
FROM run_costs WHERE run_id = ?
"""
FAILURES_SQL = """
SELECT path, stage, error_type, message FROM failures WHERE run_id = ? ORDER BY failed_at, path
"""
COSTLIEST_SQL = """
SELECT coalesce(any_value(f.path), c.doc_id) AS path, any_value(s.title) AS title, count(*) AS calls,
       sum(c.prompt_tokens) AS prompt_tokens, sum(c.cached_tokens) AS cached_tokens,
       round(sum(c.cost_usd), 6) AS cost_usd
FROM calls AS c
LEFT JOIN files AS f ON f.doc_id = c.doc_id AND NOT f.deleted
LEFT JOIN summaries AS s ON s.doc_id = c.doc_id AND s.run_id = c.run_id
WHERE c.run_id = ?
GROUP BY c.doc_id ORDER BY sum(c.cost_usd) DESC, path LIMIT ?
"""


class RunNotFound(StoreError):
    """No run, or several, start with the id given."""


def resolve_run_id(store: Store, prefix: str) -> str:
    """The full run id for `prefix` (the table shows 12 characters)."""
    rows = store.query("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [prefix]).rows
    if len(rows) != 1:
        found = "no run" if not rows else f"{len(rows)} runs"
        raise RunNotFound(f"{store.path}: {found} with an id starting {prefix!r}; `kimidocs runs` lists them")
    return str(rows[0][0])


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
