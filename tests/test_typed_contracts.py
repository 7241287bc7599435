"""Issue 11.7: the contracts between modules are types. Statuses and stages are StrEnums that still
equal the strings stored in DuckDB; the observer hears typed events; run totals are a dataclass."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

from kimidocs.commands.analyze import _Screen
from kimidocs.core.planning import MAP_REDUCE, SINGLE_CALL, Strategy
from kimidocs.core.records import CallStatus, CallTotals, DocumentStatus, RunStatus, Stage, Usage
from kimidocs.run import pipeline
from kimidocs.run.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_enums_equal_the_stored_strings() -> None:
    assert [s.value for s in Stage] == ["single", "map", "reduce", "repair", "pack"]
    assert [s.value for s in CallStatus] == ["ok", "error", "unusable", "interrupted"]
    assert {s.value for s in DocumentStatus} == {"ok", "unchanged", "failed", "skipped", "planned"}
    assert {s.value for s in RunStatus} == {"completed", "failed", "stopped", "dry_run", "running", "crashed"}
    assert Stage.PACK == "pack" and f"{RunStatus.DRY_RUN}" == "dry_run"
    # the plan's strategy and the call's stage share a word, not a name
    assert (
        (SINGLE_CALL, MAP_REDUCE) == (Strategy.SINGLE_CALL, Strategy.MAP_REDUCE) == ("single", "map_reduce")
    )


def test_call_totals_add_up() -> None:
    t = CallTotals().plus(Usage(100, 40, 10), 0.5).plus(Usage(50, 0, 5), 0.25)
    assert t == CallTotals(2, 150, 40, 15, 0.75)
    assert t + t == CallTotals(4, 300, 80, 30, 1.5)
    outcome = pipeline.DocumentOutcome("x", DocumentStatus.OK).with_totals(t)
    assert outcome.totals == t and outcome.calls == 2


def test_the_screen_and_the_quiet_observer_have_every_event() -> None:
    events = {
        n for n, _ in inspect.getmembers(pipeline.Observer, inspect.isfunction) if not n.startswith("_")
    }
    assert events >= {"run_started", "files_found", "document_finished", "call_finished", "run_finished"}
    for observer in (pipeline.QuietObserver, _Screen):
        assert events <= {n for n, _ in inspect.getmembers(observer, inspect.isfunction)}


def test_a_run_tells_its_observer_in_typed_events(tmp_path: Path, kimi_emulator) -> None:
    heard: list[tuple[str, object]] = []

    class Recorder(pipeline.QuietObserver):
        def run_started(self, info: pipeline.RunStarted) -> None:
            heard.append(("run_started", info.backend))

        def files_found(self, count: int) -> None:
            heard.append(("files_found", count))

        def document_finished(self, outcome: pipeline.DocumentOutcome) -> None:
            heard.append(("document_finished", outcome.status))

        def call_finished(self, usage: Usage, cost_usd: float, stage: Stage) -> None:
            heard.append(("call_finished", stage))

        def run_finished(self, report: pipeline.RunReport) -> None:
            heard.append(("run_finished", report.status))

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REPO / "data/samples/crazyones.pdf", folder)
    db = tmp_path / "k.duckdb"
    settings = Settings(
        KIMI_API_KEY=kimi_emulator.api_key,
        KIMI_BASE_URL=kimi_emulator.base_url,
        KIMIDOCS_DB=str(db),
        _env_file=None,
    )
    report = pipeline.run_folder(
        pipeline.RunOptions(folder=str(folder), db=str(db)), settings, observer=Recorder()
    )
    assert report.status is RunStatus.COMPLETED
    assert heard == [
        ("run_started", "emulator"),
        ("files_found", 1),
        ("call_finished", Stage.SINGLE),
        ("document_finished", DocumentStatus.OK),
        ("run_finished", RunStatus.COMPLETED),
    ]
