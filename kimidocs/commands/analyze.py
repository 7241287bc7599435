"""`kimidocs analyze PATH`: the whole pipeline over a folder (or one file), with progress on screen."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kimidocs.core.paths import shown
from kimidocs.core.records import Stage, Usage
from kimidocs.run import pipeline
from kimidocs.run.context import resolve_profile
from kimidocs.run.discover import FolderError
from kimidocs.run.settings import load_settings
from prompts import ProfileError


@dataclass
class InFlight:
    """A document's progress row: its rich task and the calls its plan has and has made."""

    task: TaskID
    calls_total: int = 0
    calls_done: int = 0


class _Screen(pipeline.QuietObserver):
    """Rich progress bars fed by the pipeline's events (documents, calls, tokens, dollars)."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,  # quiet in pipes and CI logs, as with --quiet
            transient=False,
        )
        self.docs = self.progress.add_task("documents", total=None, info="")
        self.calls = self.progress.add_task("Kimi calls", total=None, info="")
        self.n_calls = 0
        self.prompt = self.cached = 0
        self.cost = 0.0
        self.in_flight: dict[str, InFlight] = {}  # a row per document being worked on

    def _row(self, path: str) -> InFlight:
        row = self.in_flight.get(path)
        if row is None:
            name = "  " + shown(Path(path).name)
            row = self.in_flight[path] = InFlight(self.progress.add_task(name, total=None, info="starting"))
        return row

    def document_started(self, path: str) -> None:
        with self.lock:
            self._row(path)

    def extract_progress(self, path: str, done: int, total: int) -> None:
        with self.lock:
            row = self._row(path)
            self.progress.update(row.task, completed=done, total=total, info="pages extracted")

    def document_planned(self, path: str, strategy: str, calls: int) -> None:
        with self.lock:
            row = self._row(path)
            row.calls_total = calls
            what = "call" if calls == 1 else f"calls ({strategy.replace('_', '-')})"
            self.progress.update(row.task, completed=0, total=calls, info=what)

    def document_call(self, path: str, stage: Stage) -> None:
        with self.lock:
            row = self._row(path)
            row.calls_done += 1
            total = max(row.calls_total, row.calls_done)  # repairs and splits add calls to the plan
            self.progress.update(
                row.task, completed=row.calls_done, total=total, info=f"calls, last: {stage}"
            )

    def run_waiting(self, message: str) -> None:
        with self.lock:  # said even with --quiet: a cron log should show why a run idled
            Console(stderr=True).print(f"[yellow]{message}[/yellow]", soft_wrap=True, highlight=False)

    def run_started(self, info: pipeline.RunStarted) -> None:
        if info.model_note:  # even with --quiet: the run bills another model than the default
            self.console.print(f"[yellow]{escape(info.model_note)}[/yellow]")
        if self.quiet:
            return
        with self.lock:
            if info.emulated_here:
                self.console.print(
                    "[yellow]No KIMI_API_KEY set: running against the local Kimi emulator. "
                    "Results are emulated and marked backend='emulator' in the database.[/yellow]"
                )
            elif info.backend == "emulator":
                self.console.print(
                    f"[yellow]{info.base_url} is a kimidocs emulator: results are emulated and "
                    "marked backend='emulator' in the database.[/yellow]"
                )
            elif info.backend != "kimi":
                self.console.print(
                    f"[yellow]{info.base_url} is not Kimi but an OpenAI-compatible server: rows are "
                    f"marked backend='{info.backend}'.[/yellow]"
                )
            self.console.print(f"model [bold]{info.model}[/bold], database [bold]{info.db}[/bold]")

    def files_found(self, count: int) -> None:
        with self.lock:
            self.progress.update(self.docs, total=count)

    def document_finished(self, outcome: pipeline.DocumentOutcome) -> None:
        with self.lock:
            row = self.in_flight.pop(outcome.path, None)
            if row is not None:
                self.progress.remove_task(row.task)
            name = shown(Path(outcome.path).name)
            self.progress.update(self.docs, advance=1, info=f"{name}: {outcome.status}")

    def call_finished(self, usage: Usage, cost_usd: float, stage: Stage) -> None:
        with self.lock:
            self.n_calls += 1
            self.prompt += usage.prompt_tokens
            self.cached += usage.cached_tokens
            self.cost += cost_usd
            self.progress.update(
                self.calls,
                completed=self.n_calls,
                info=f"{self.prompt:,} tokens in ({self.cached:,} cached), ${self.cost:.4f}",
            )


def _reason(o: pipeline.DocumentOutcome) -> str:
    """The title of a finished document; for a failure the reason first, without the path it repeats."""
    if o.status in ("ok", "planned"):
        return o.title or ""
    if o.status == "unchanged":
        return "already analysed (same content, profile, prompt, model)"
    message = shown(o.message or "").removeprefix(f"{shown(o.path)}: ")
    return f"{o.error_type or 'error'}: {message}" if o.error_type else message


def shown_path(path: str, root: Path) -> str:
    """A document's path relative to the analysed folder (the folder is printed once, above)."""
    base = root if root.is_dir() else root.parent
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


#: Columns of the results table; the starred ones are dropped on terminals narrower than WIDE.
_COLUMNS = (("status", 9, False), ("pages", 5, True), ("strategy", 10, True), ("coverage", 8, True))
WIDE = 110


def summary_table(report: pipeline.RunReport, root: Path, width: int = 200) -> Table:
    """One row per document, fitted to `width` (the console's): the document and reason columns shrink
    with ellipses, the numbers never do; below WIDE columns the plan details are left out."""
    wide = width >= WIDE
    table = Table(
        title=f"kimidocs run {report.run_id[:12]} ({report.backend})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = [(name, w) for name, w, optional in _COLUMNS if wide or not optional]
    paths = [shown(shown_path(o.path, root)) for o in report.outcomes]
    doc_width = min(max([len(p) for p in paths] + [8]), 48 if wide else 24)
    fixed = doc_width + sum(w for _n, w in columns) + 5 + 7 + 3 * (len(columns) + 4) + 2  # padding, rules
    table.add_column("document", no_wrap=True, width=doc_width, overflow="ellipsis")
    for name, w in columns:
        table.add_column(name, no_wrap=True, width=w, justify="right" if w < 8 else "left")
    table.add_column("calls", no_wrap=True, width=5, justify="right")
    table.add_column("cost $", no_wrap=True, width=7, justify="right")
    table.add_column("title / reason", no_wrap=True, max_width=max(width - fixed, 10), overflow="ellipsis")
    for o, path in zip(report.outcomes, paths, strict=True):
        cost = o.cost_usd_est if o.status == "planned" else o.cost_usd
        cells = {
            "status": o.status,
            "pages": str(o.pages or ""),
            "strategy": o.strategy or "",
            "coverage": f"{o.coverage:.0%}" if o.coverage is not None else "",
        }
        table.add_row(
            path,
            *(cells[name] for name, _w in columns),
            str(o.calls),
            f"{cost or 0:.5f}",
            _reason(o),
        )
    return table


def plural(n: int, word: str) -> str:
    """`1 page`, `2 pages`."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def analyze(
    path: Annotated[Path, typer.Argument(help="Folder (or single file) to analyse.")],
    profile: Annotated[
        str,
        typer.Option(help="Profile on the search path: KIMIDOCS_PROFILES, ./profiles, then built-ins."),
    ] = "summary",
    model: Annotated[str | None, typer.Option(help="Model id (default: KIMI_MODEL or kimi-k2.5).")] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default: KIMIDOCS_DB).")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Glob to include (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob to exclude (repeatable).")] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Stop starting calls past this many dollars.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Extract and plan only; print the cost estimate.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Documents in parallel.")] = 4,
    force: Annotated[
        bool, typer.Option("--force", help="Re-analyse documents that already have a result.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress; for cron.")] = False,
    pack: Annotated[
        bool | None,
        typer.Option(
            "--pack/--no-pack", help="Several small documents per request (default: only where RPM binds)."
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="interactive (real-time calls) or batch (Kimi's Batch API: 60 % of the price, results "
            "within hours; rerun the same command to pick up a batch still running).",
        ),
    ] = "interactive",
) -> None:
    """Analyse every PDF/DOCX/text file under PATH and store structured summaries in DuckDB."""
    # A pipe or a CI log has no width of its own: tables keep their natural width instead of rich's 80.
    console = Console(width=None if sys.stdout.isatty() else 10_000)
    screen = _Screen(console, quiet)
    options = pipeline.RunOptions(
        folder=str(path),
        profile=profile,
        model=model,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        max_cost_usd=max_cost_usd,
        dry_run=dry_run,
        concurrency=concurrency,
        force=force,
        db=str(db) if db else None,
        pack=pack,
        mode=mode,
    )
    settings = load_settings()
    try:
        note = resolve_profile(profile, settings).shadow_note
    except ProfileError:
        note = None  # open_run says what is wrong, in one line
    if note:
        Console(stderr=True).print(f"[yellow]note: {note}[/yellow]", soft_wrap=True, highlight=False)
    try:
        with screen.progress:
            report = pipeline.run_folder(options, settings, observer=screen)
    except FolderError as err:
        console.print(f"[red]error:[/red] {shown(str(err))}")
        raise typer.Exit(2) from None
    if not quiet:
        console.print(f"folder [bold]{path}[/bold]")
        console.print(summary_table(report, path, console.width))
        if dry_run:
            console.print(
                f"estimated cost: [bold]${report.cost_usd_est:.4f}[/bold] for {report.count('planned')} "
                f"document(s) to analyse; {report.count('unchanged')} unchanged (already analysed, $0); "
                "nothing was sent"
            )
        else:
            console.print(
                f"{report.count('ok')} ok, {report.count('unchanged')} unchanged, "
                f"{report.count('skipped')} skipped, "
                f"{report.count('failed')} failed; {report.prompt_tokens:,} prompt tokens "
                f"({report.cache_hit_share:.0%} cached), ${report.cost_usd:.4f}; results in {report.db}"
            )
        if report.status == "stopped":
            console.print(f"[red]run stopped:[/red] {report.message}")
    raise typer.Exit(1 if report.failed or report.status == "stopped" else 0)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
