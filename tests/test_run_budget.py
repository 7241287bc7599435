"""The budget and the abort are the run's, not a process's (issue 23.3): every process or machine that
works on a run reserves against the run's ledger in the store, so `max_cost_usd` holds for the run as a
whole, and a run stopped in one process stops the others before their next call."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

from kimidocs.core.budget import BudgetExceeded
from kimidocs.run import pipeline
from kimidocs.run.discover import discover
from kimidocs.run.settings import Settings


def _notes(folder: Path, n: int, repeat: int = 25) -> Path:
    """`n` distinct notes; long ones (`repeat`) make the prompt, not `max_tokens`, most of a reservation."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note-{i:02d}.txt").write_text(
            f"Note {i}. The board approved budget line {i} of {i},200 EUR on {i % 28 + 1} March 2026. "
            * repeat,
            encoding="utf-8",
        )
    return folder


def _settings(emu, db: Path) -> Settings:
    return Settings(KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, KIMIDOCS_DB=str(db), _env_file=None)


def _worker(run_id: str, options: pipeline.RunOptions, settings: Settings, paths: list[str]) -> list[str]:
    """One process of the run (as a Prefect task in a process pool or a fan-out child): attach, analyse
    its share of the files, detach."""
    ctx = pipeline.attach_run(run_id, options, settings)
    try:
        files = [f for f in discover(options.folder) if f.path in set(paths)]
        return [o.status for f in files for o in pipeline.analyze_group(ctx, [f]).outcomes]
    finally:
        pipeline.detach_run(ctx)


def test_three_processes_spend_within_the_runs_cap(tmp_path: Path, make_emulator) -> None:
    folder = _notes(tmp_path / "in", 12, repeat=800)
    whole = run_pipeline(folder, tmp_path / "probe.duckdb", make_emulator(), concurrency=2).cost_usd
    cap = whole / 2
    emu = make_emulator()  # a cold prefix cache, as for the probe
    db = tmp_path / "k.duckdb"
    settings = _settings(emu, db)
    options = pipeline.RunOptions(folder=str(folder), db=str(db), max_cost_usd=cap, concurrency=2, pack=False)
    ctx = pipeline.open_run(options, settings)
    files = pipeline.list_files(ctx)
    shards = [[f.path for f in files[i::3]] for i in range(3)]
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(3) as pool:
        statuses = pool.starmap(_worker, [(ctx.run_id, options, settings, shard) for shard in shards])
    pipeline.close_run(ctx, [])
    spent = db_rows(db, "SELECT sum(cost_usd) FROM calls WHERE run_id = ?", [ctx.run_id])[0][0]
    done = [s for shard in statuses for s in shard]
    assert done.count("ok") >= 1 and done.count("skipped") >= 1, done
    print(f"spent / cap = {spent / cap:.3f}, {done.count('ok')} of {len(done)} documents")
    assert spent <= cap, f"spent {spent / cap:.2f} x the cap"
    assert db_rows(db, "SELECT count(*) FROM budget_reservations") == [(0,)]  # all released


def test_a_reservation_in_one_process_is_seen_by_another(tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    settings = _settings(kimi_emulator, db)
    options = pipeline.RunOptions(folder=str(_notes(tmp_path / "in", 1)), db=str(db), max_cost_usd=1.0)
    owner = pipeline.open_run(options, settings)
    one, two = (pipeline.attach_run(owner.run_id, options, settings) for _ in range(2))
    try:
        held = one.guard.reserve(0.6)
        with pytest.raises(BudgetExceeded, match="every process"):
            two.guard.reserve(0.5)
        one.guard.settle(held, 0.0)  # released, nothing spent: the other may go
        two.guard.settle(two.guard.reserve(0.5), 0.0)
    finally:
        for ctx in (one, two):
            pipeline.detach_run(ctx)
        pipeline.close_run(owner, [])


def test_a_run_stopped_in_one_process_stops_the_others(tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    settings = _settings(kimi_emulator, db)
    folder = _notes(tmp_path / "in", 2)
    options = pipeline.RunOptions(folder=str(folder), db=str(db))
    owner = pipeline.open_run(options, settings)
    one, two = (pipeline.attach_run(owner.run_id, options, settings) for _ in range(2))
    try:
        one.abort("401 invalid_authentication_error: the key is wrong")
        files = pipeline.list_files(two)
        (outcome,) = pipeline.analyze_group(two, files[:1]).outcomes
        assert outcome.error_type == "RunAborted" and "the key is wrong" in (outcome.message or "")
        assert kimi_emulator.chat_requests() == 0  # stopped before its call
    finally:
        for ctx in (one, two):
            pipeline.detach_run(ctx)
        pipeline.close_run(owner, [])


def test_every_process_of_a_run_follows_its_warm_up_decision(tmp_path: Path, kimi_emulator) -> None:
    """Issue 23.5: the warm-up is decided once, where the files are listed, and carried with the options:
    an attached process does not send its first call alone when the run decided against it, does when
    the run decided for it and nothing has returned yet, and not once another process warmed the cache."""
    for count, alone in ((1, False), (30, True)):
        db = tmp_path / f"k-{count}.duckdb"
        settings = _settings(kimi_emulator, db)
        folder = _notes(tmp_path / f"in-{count}", count)
        owner = pipeline.open_run(pipeline.RunOptions(folder=str(folder), db=str(db)), settings)
        files = pipeline.list_files(owner)
        assert owner.options.warm_start is alone
        cold = pipeline.attach_run(owner.run_id, owner.options, settings)
        assert cold.scheduler.warmup.enabled is alone and cold.scheduler.warmup.open is not alone
        pipeline.analyze_group(cold, files[:1])
        warm = pipeline.attach_run(owner.run_id, owner.options, settings)
        assert warm.scheduler.warmup.open and warm.scheduler.warm_tokens == (
            warm.scheduler.system_tokens if alone else 0
        )
        for ctx in (cold, warm):
            pipeline.detach_run(ctx)
        pipeline.close_run(owner, [])
