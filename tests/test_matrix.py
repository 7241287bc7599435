"""The matrix of issue 23: every kind of result {summary, declared profile, questions} through every way a
run's calls go out {interactive in this process, interactive in several processes attached to one run,
the Batch API} stores the same results for the same documents, pays each call at its mode's price, and
holds the run's cap. Over real sockets to the emulator (in-process), real DuckDB files, real processes.
Prefect's drivers (document tasks, fan-out shards) run the same `analyze_group` as the attached processes
here; their own tests (test_prefect_*, test_worker_failure) cover the flow around it."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline
from test_batch_mode import FAST

from kimidocs.core.costs import batch_call_cost, call_cost
from kimidocs.core.models import get_model
from kimidocs.core.records import Usage
from kimidocs.run import pipeline
from kimidocs.run.discover import discover
from kimidocs.run.settings import Settings

KINDS = {
    "summary": {},
    "declared": {"profile": "contract"},
    "questions": {"questions": ("Who pays?", "When does it start?")},
}
DRIVERS = ("in-process", "attached processes", "batch")
MODEL = get_model("kimi-k2.5")


def _docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (folder / f"lease-{i}.txt").write_text(
            f"Lease {i}. Alpha Ltd lets the flat at {i} Main Street to Beta GmbH from 1 March 202{i}. "
            f"Beta pays 1,{i}00 EUR on the first day of each month; the deposit is {i + 2} months. " * 20,
            encoding="utf-8",
        )
    return folder


def _settings(emu, db: Path) -> Settings:
    return Settings(KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, KIMIDOCS_DB=str(db), _env_file=None)


def _attached_worker(run_id: str, options: pipeline.RunOptions, settings: Settings, path: str) -> str:
    ctx = pipeline.attach_run(run_id, options, settings)
    try:
        files = [f for f in discover(options.folder) if f.path == path]
        (outcome,) = pipeline.analyze_group(ctx, files).outcomes
        return str(outcome.status)
    finally:
        pipeline.detach_run(ctx)


def _run(driver: str, folder: Path, db: Path, emu, **options) -> None:
    if driver == "in-process":
        run_pipeline(folder, db, emu, **options)
        return
    if driver == "batch":
        run_pipeline(folder, db, emu, mode="batch", **options)
        return
    settings = _settings(emu, db)
    run_options = pipeline.RunOptions(folder=str(folder), db=str(db), **options)
    ctx = pipeline.open_run(run_options, settings)
    files = pipeline.list_files(ctx)
    with multiprocessing.get_context("spawn").Pool(len(files)) as pool:
        pool.starmap(_attached_worker, [(ctx.run_id, ctx.options, settings, f.path) for f in files])
    pipeline.close_run(ctx, [])


def _results(db: Path, kind: str) -> dict[str, object]:
    """What the run stored, per document, in a form that compares across runs."""
    names = dict(db_rows(db, "SELECT doc_id, regexp_extract(path, '[^/]+$') FROM files"))
    if kind == "summary":
        rows = db_rows(db, "SELECT doc_id, raw FROM summaries")
        return {names[d]: json.loads(raw) for d, raw in rows}
    if kind == "declared":
        rows = db_rows(db, "SELECT doc_id, task, result FROM task_results ORDER BY task")
        out: dict[str, dict[str, object]] = {}
        for d, task, result in rows:
            out.setdefault(names[d], {})[task] = json.loads(result)
        return dict(out)
    rows = db_rows(db, "SELECT doc_id, question_no, answer, pages FROM questions ORDER BY question_no")
    grouped: dict[str, list[object]] = {}
    for d, no, answer, pages in rows:
        grouped.setdefault(names[d], []).append((no, answer, list(pages or [])))
    return dict(grouped)


@pytest.fixture(autouse=True)
def _fast_batches(monkeypatch) -> None:
    monkeypatch.setenv("KIMIDOCS_BATCH_POLL_S", "0.05")
    monkeypatch.setenv("KIMIDOCS_BATCH_TIMEOUT_S", "60")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, object]]:
    """Each kind's results from the plainest run: interactive, in this process."""
    from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread

    base = tmp_path_factory.mktemp("reference")
    folder = _docs(base / "in")
    out = {}
    with run_emulator_in_thread(EmulatorConfig()) as emu:
        for kind, options in KINDS.items():
            db = base / f"{kind}.duckdb"
            run_pipeline(folder, db, emu, **options)
            out[kind] = _results(db, kind)
    return out


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_cell_stores_the_same_results_at_its_price(
    kind: str, driver: str, reference, tmp_path: Path, make_emulator
) -> None:
    emu = make_emulator(**FAST)
    folder = _docs(tmp_path / "in")
    db = tmp_path / "k.duckdb"
    _run(driver, folder, db, emu, **KINDS[kind])
    assert _results(db, kind) == reference[kind]
    calls = db_rows(
        db, "SELECT batch_id, prompt_tokens, cached_tokens, completion_tokens, cost_usd FROM calls"
    )
    assert calls
    for batch_id, prompt, cached, completion, cost in calls:
        usage = Usage(prompt, cached, completion)
        price = batch_call_cost(usage, MODEL) if batch_id else call_cost(usage, MODEL)
        assert cost == pytest.approx(price)
        assert (batch_id is not None) == (driver == "batch")  # batch mode: every call through a batch
    (stored,) = db_rows(db, "SELECT sum(cost_usd) FROM calls")[0]
    (run_total,) = (
        db_rows(db, "SELECT cost_usd FROM runs WHERE status = 'completed'")[0]
        if driver != ("attached processes")
        else (stored,)
    )
    assert run_total == pytest.approx(stored)


@pytest.mark.parametrize("driver", ["in-process", "attached processes"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_cell_holds_the_runs_cap(kind: str, driver: str, tmp_path: Path, make_emulator) -> None:
    folder = _docs(tmp_path / "in")
    whole = run_pipeline(folder, tmp_path / "probe.duckdb", make_emulator(), **KINDS[kind]).cost_usd
    cap = whole / 2
    db = tmp_path / "k.duckdb"
    _run(driver, folder, db, make_emulator(), max_cost_usd=cap, **KINDS[kind])
    (spent,) = db_rows(db, "SELECT coalesce(sum(cost_usd), 0) FROM calls")[0]
    assert spent <= cap
    assert db_rows(db, "SELECT count(*) FROM failures WHERE error_type = 'BudgetExceeded'")[0][0] >= 1
