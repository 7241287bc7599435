"""`kimidocs ask FILE "question" ["question" ...]`: free questions over one document, with page citations.

Prints a table on a terminal (one row per question: answer, pages, evidence, cost); `--json` prints one
object per line instead:

    {"question", "answer", "pages", "evidence", "cost_usd", "calls", "prompt_tokens", "cached_tokens",
     "strategy", "error"}

Answers are also appended to the `questions` table. Exit status 1 when the document could not be read
or a question got no answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kimidocs.core.paths import shown
from kimidocs.run.ask import AskReport, ask
from kimidocs.run.context import RunOptions
from kimidocs.run.settings import load_settings


def answers_table(report: AskReport) -> Table:
    """One row per question."""
    table = Table(title=f"kimidocs ask {report.run.run_id[:12]} ({report.run.backend})", box=box.SIMPLE_HEAD)
    for name in ("question", "answer", "pages", "evidence"):
        table.add_column(name, overflow="fold")
    table.add_column("cost $", justify="right", no_wrap=True)
    for a in report.answers:
        table.add_row(  # document text is shown as written, never read as rich markup
            escape(a.question),
            escape(a.answer) if a.answer is not None else f"[red]{escape(a.error or 'no answer')}[/red]",
            ", ".join(str(p) for p in a.pages),
            escape(a.evidence or ""),
            f"{a.cost_usd:.5f}",
        )
    return table


def ask_command(
    path: Annotated[Path, typer.Argument(help="The document (PDF, DOCX or text file).")],
    questions: Annotated[list[str], typer.Argument(help="One or more questions, each quoted.")],
    model: Annotated[str | None, typer.Option(help="Model id (default: KIMI_MODEL or kimi-k2.5).")] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default: KIMIDOCS_DB).")] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Stop starting calls past this many dollars.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Calls in parallel.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
) -> None:
    """Answer free questions about one document, each with the pages it rests on and a verbatim quote."""
    console = Console(width=None if sys.stdout.isatty() else 10_000)
    options = RunOptions(
        folder=str(path),
        model=model,
        max_cost_usd=max_cost_usd,
        concurrency=concurrency,
        db=str(db) if db else None,
    )
    report = ask(str(path), questions, options, load_settings())
    outcome = report.outcome
    if as_json:
        for a in report.answers:
            typer.echo(json.dumps(a.as_json(outcome.strategy), ensure_ascii=False))
    else:
        console.print(answers_table(report))
        console.print(
            f"{outcome.calls} call(s), {outcome.prompt_tokens:,} prompt tokens "
            f"({outcome.cached_tokens:,} cached), ${outcome.cost_usd:.4f}; answers in {report.run.db}"
        )
    if not report.answers:  # the document could not be read (or the run stopped)
        Console(stderr=True).print(
            f"[red]error:[/red] {escape(shown(outcome.message or outcome.error_type or 'failed'))}",
            soft_wrap=True,
            highlight=False,
        )
    raise typer.Exit(1 if report.failed else 0)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_command)
