"""Progress inside long work (issue 13.2): pages extracted, the plan, and the calls of each document, told
to the observer as they happen; the screen shows a row per document in flight and removes it when done."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

from rich.console import Console

from kimidocs.commands.analyze import _Screen
from kimidocs.core.records import DocumentStatus, Stage
from kimidocs.run import pipeline
from kimidocs.run.settings import Settings


class Recorder(pipeline.QuietObserver):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pages: dict[str, list[tuple[int, int]]] = {}
        self.planned: dict[str, tuple[str, int]] = {}
        self.calls: dict[str, list[Stage]] = {}

    def extract_progress(self, path: str, done: int, total: int) -> None:
        with self.lock:
            self.pages.setdefault(Path(path).name, []).append((done, total))

    def document_planned(self, path: str, strategy: str, calls: int) -> None:
        self.planned[Path(path).name] = (strategy, calls)

    def document_call(self, path: str, stage: Stage) -> None:
        with self.lock:
            self.calls.setdefault(Path(path).name, []).append(stage)


def test_a_map_reduce_document_reports_pages_plan_and_calls(
    tmp_path: Path, corpus: Path, kimi_emulator
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(corpus / "pdf" / "redp5110_sampled.pdf", folder)
    shutil.copy(corpus / "pdf" / "crazyones.pdf", folder)
    settings = Settings(
        KIMI_API_KEY=kimi_emulator.api_key,
        KIMI_BASE_URL=kimi_emulator.base_url,
        KIMIDOCS_DB=str(tmp_path / "k.duckdb"),
    )
    seen = Recorder()
    options = pipeline.RunOptions(folder=str(folder), db=str(tmp_path / "k.duckdb"), model="kimidocs-test-8k")
    report = pipeline.run_folder(options, settings, observer=seen)
    assert report.count("ok") == 2
    pages = seen.pages["redp5110_sampled.pdf"]
    assert pages[-1] == (18, 18) and [d for d, _t in pages] == sorted(d for d, _t in pages)
    strategy, planned = seen.planned["redp5110_sampled.pdf"]
    assert strategy == "map_reduce" and planned > 1
    stages = seen.calls["redp5110_sampled.pdf"]
    assert Stage.MAP in stages and Stage.REDUCE in stages and len(stages) >= planned - 1
    assert seen.planned["crazyones.pdf"] == ("single", 1) and seen.calls["crazyones.pdf"] == [Stage.SINGLE]


def test_the_screen_shows_documents_in_flight_and_forgets_finished_ones() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    screen = _Screen(console, quiet=False)
    screen.document_started("/in/book.pdf")
    screen.extract_progress("/in/book.pdf", 200, 934)
    row = screen.in_flight["/in/book.pdf"]
    task = screen.progress.tasks[[t.id for t in screen.progress.tasks].index(row.task)]
    assert (task.completed, task.total, task.fields["info"]) == (200, 934, "pages extracted")
    screen.document_planned("/in/book.pdf", "map_reduce", 7)
    for _ in range(3):
        screen.document_call("/in/book.pdf", Stage.MAP)
    task = screen.progress.tasks[[t.id for t in screen.progress.tasks].index(row.task)]
    assert (task.completed, task.total) == (3, 7)
    screen.document_finished(pipeline.DocumentOutcome("/in/book.pdf", DocumentStatus.OK))
    assert screen.in_flight == {} and row.task not in [t.id for t in screen.progress.tasks]


def test_the_screen_is_quiet_without_a_terminal() -> None:
    screen = _Screen(Console(file=io.StringIO(), width=120), quiet=False)
    assert screen.progress.disable
