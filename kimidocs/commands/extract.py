"""`kimidocs extract FILE...`: what the extractor makes of each file, without calling any model.

One line per file (path, kind, pages, chars, warnings), or JSON Lines with `--json`:
    {"path", "ok": true, "kind", "pages", "chars", "warnings": [...]}
    {"path", "ok": false, "error_type", "message"}
Exit code 0 when every file was extracted, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

import extractors
from extractors import Document, ExtractionError, Limits
from kimidocs.commands.analyze import plural
from kimidocs.core.paths import shown
from kimidocs.run.document import extraction_limits
from kimidocs.run.settings import load_settings

FileProgress = Callable[[str, int, int], None]


def _record(path: str, result: Document | ExtractionError) -> dict:
    path = shown(path)  # a non-UTF-8 file name cannot be printed as it is
    if isinstance(result, ExtractionError):
        return {"path": path, "ok": False, "error_type": result.error_type, "message": shown(str(result))}
    return {
        "path": path,
        "ok": True,
        "kind": result.kind,
        "pages": len(result.pages),
        "chars": result.chars,
        "warnings": list(result.warnings),
    }


def _line(rec: dict) -> str:
    """One line per file; its warnings follow, one per line, indented (a count alone says nothing)."""
    if not rec["ok"]:
        return f"{rec['path']}\tERROR\t{rec['error_type']}: {rec['message']}"
    head = (
        f"{rec['path']}\t{rec['kind']}\t{plural(rec['pages'], 'page')}\t{plural(rec['chars'], 'char')}\t"
        f"{plural(len(rec['warnings']), 'warning')}"
    )
    return "\n".join([head, *(f"  warning: {w}" for w in rec["warnings"])])


def _results(
    files: list[Path], limits: Limits, workers: int, on_progress: FileProgress | None = None
) -> Iterator[tuple[str, Document | ExtractionError]]:
    """One file in this process (fast start); several on `workers` worker processes."""
    if len(files) == 1 and limits.timeout_s is None:
        told = None if on_progress is None else (lambda d, t: on_progress(str(files[0]), d, t))
        try:
            yield str(files[0]), extractors.extract(files[0], limits=limits, on_progress=told)
        except ExtractionError as exc:
            yield str(files[0]), exc
        return
    paths = [str(f) for f in files]
    yield from extractors.extract_many(paths, limits=limits, workers=workers, on_progress=on_progress)


class PageProgress:
    """Files in flight with their pages done out of pages total, on a terminal only (rich, transient:
    the bars go when the file is done, the result lines stay)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pages"),
            TimeElapsedColumn(),
            transient=True,
            disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __call__(self, path: str, done: int, total: int) -> None:
        with self.lock:
            if path not in self.tasks:
                self.tasks[path] = self.progress.add_task(shown(Path(path).name), total=total)
            self.progress.update(self.tasks[path], completed=done, total=total)

    def say(self, line: str) -> None:
        """A result line: above the live bars on a terminal, plain stdout otherwise."""
        if self.progress.live.is_started and not self.progress.disable:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            typer.echo(line)

    def finish(self, path: str) -> None:
        with self.lock:
            task = self.tasks.pop(path, None)
            if task is not None:
                self.progress.remove_task(task)


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract_cmd(
        files: Annotated[
            list[Path], typer.Argument(help="PDF, DOCX or text files (type sniffed from the bytes).")
        ],
        as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one object per file.")] = False,
        text: Annotated[bool, typer.Option("--text", help="Also print each page's text.")] = False,
        timeout: Annotated[
            float | None,
            typer.Option(
                "--timeout",
                help="Seconds a file may go without finishing a page; the worker is killed after that "
                "(default: as analyze, KIMIDOCS_EXTRACT_TIMEOUT_S).",
            ),
        ] = None,
        workers: Annotated[
            int, typer.Option("--workers", min=1, help="Worker processes for several files.")
        ] = 2,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """Extract text from files and report pages, characters and warnings (no model is called)."""
        limits = extraction_limits(load_settings())  # the same bounds as `kimidocs analyze`
        if timeout is not None:
            limits = replace(limits, timeout_s=timeout, timeout_hint="--timeout")
        failed = 0
        # Progress on a terminal only: quiet in pipes, CI logs, --json and --quiet.
        bars = PageProgress(sys.stderr.isatty() and sys.stdout.isatty() and not (as_json or quiet))
        with bars.progress:
            for path, result in _results(files, limits, workers, bars):
                bars.finish(path)
                rec = _record(path, result)
                failed += not rec["ok"]
                bars.say(json.dumps(rec, ensure_ascii=False) if as_json else _line(rec))
                if text and isinstance(result, Document):
                    for page in result.pages:
                        label = f" ({page.label})" if page.label else ""
                        typer.echo(f"--- page {page.number}{label} ---", err=as_json)
                        typer.echo(page.text, err=as_json)
        sys.stdout.flush()
        raise typer.Exit(1 if failed else 0)
