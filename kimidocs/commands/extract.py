"""`kimidocs extract FILE...`: what the extractor makes of each file, without calling any model.

One line per file (path, kind, pages, chars, warnings), or JSON Lines with `--json`:
    {"path", "ok": true, "kind", "pages", "chars", "warnings": [...]}
    {"path", "ok": false, "error_type", "message"}
Exit code 0 when every file was extracted, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

import extractors
from extractors import Document, ExtractionError, Limits
from kimidocs.analysis import extraction_limits
from kimidocs.paths import shown
from kimidocs.settings import load_settings


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
    if not rec["ok"]:
        return f"{rec['path']}\tERROR\t{rec['error_type']}: {rec['message']}"
    return (
        f"{rec['path']}\t{rec['kind']}\t{rec['pages']} pages\t{rec['chars']} chars\t"
        f"{len(rec['warnings'])} warnings"
    )


def _results(
    files: list[Path], limits: Limits, workers: int
) -> Iterator[tuple[str, Document | ExtractionError]]:
    """One file in this process (fast start); several on `workers` worker processes."""
    if len(files) == 1 and limits.timeout_s is None:
        try:
            yield str(files[0]), extractors.extract(files[0], limits=limits)
        except ExtractionError as exc:
            yield str(files[0]), exc
        return
    yield from extractors.extract_many([str(f) for f in files], limits=limits, workers=workers)


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
                help="Seconds per file; the worker is killed after that (default: as analyze, "
                "KIMIDOCS_EXTRACT_TIMEOUT_S).",
            ),
        ] = None,
        workers: Annotated[
            int, typer.Option("--workers", min=1, help="Worker processes for several files.")
        ] = 2,
    ) -> None:
        """Extract text from files and report pages, characters and warnings (no model is called)."""
        limits = extraction_limits(load_settings())  # the same bounds as `kimidocs analyze`
        if timeout is not None:
            limits = replace(limits, timeout_s=timeout)
        failed = 0
        for path, result in _results(files, limits, workers):
            rec = _record(path, result)
            failed += not rec["ok"]
            typer.echo(json.dumps(rec, ensure_ascii=False) if as_json else _line(rec))
            if text and isinstance(result, Document):
                for page in result.pages:
                    label = f" ({page.label})" if page.label else ""
                    typer.echo(f"--- page {page.number}{label} ---", err=as_json)
                    typer.echo(page.text, err=as_json)
        sys.stdout.flush()
        raise typer.Exit(1 if failed else 0)
