"""One sequencer for a document's calls (issue 23): the seams where money leaked, each a test.

1. questions in batch mode go through the Batch API at the batch price;
2. a declared profile in batch mode takes one batch round per reduce level, not one per task;
4. questions are recorded like tasks: a failure row per failed question, the run's concurrency shared
   across questions (never c x c), and a budget stop that reports what was spent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline
from test_batch_mode import FAST

from kimidocs.core.costs import batch_call_cost, request_estimate
from kimidocs.core.models import get_model
from kimidocs.core.records import Usage

QUESTIONS = ("Who pays the rent?", "When does the lease start?", "What is the deposit?")


def _leases(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"lease-{i}.txt").write_text(
            f"Lease {i}. The tenant pays 1,{i}00 EUR a month from 1 March 2026. The deposit is 3 months. "
            * 30,
            encoding="utf-8",
        )
    return folder


@pytest.fixture()
def batch_env(monkeypatch) -> None:
    monkeypatch.setenv("KIMIDOCS_BATCH_POLL_S", "0.05")
    monkeypatch.setenv("KIMIDOCS_BATCH_TIMEOUT_S", "60")


def test_questions_in_batch_mode_go_through_the_batch_api(tmp_path: Path, make_emulator, batch_env) -> None:
    emu = make_emulator(**FAST)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(_leases(tmp_path / "in"), db, emu, mode="batch", questions=QUESTIONS[:2])
    assert report.count("ok") == 2, report.outcomes
    rows = db_rows(
        db, "SELECT batch_id, prompt_tokens, cached_tokens, completion_tokens, cost_usd FROM calls"
    )
    assert len(rows) == 4 and all(r[0] for r in rows), rows  # every call answered by a batch
    model = get_model("kimi-k2.5")
    for _b, p, c, o, cost in rows:
        assert cost == pytest.approx(batch_call_cost(Usage(p, c, o), model))
    assert db_rows(db, "SELECT count(*) FROM batches")[0][0] == 1
    assert db_rows(db, "SELECT count(*) FROM questions WHERE answer IS NOT NULL")[0][0] == 4


def test_a_declared_profile_in_batch_mode_takes_one_round(tmp_path: Path, make_emulator, batch_env) -> None:
    emu = make_emulator(**FAST)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(_leases(tmp_path / "in"), db, emu, mode="batch", profile="contract")
    assert report.count("ok") == 2, report.outcomes
    assert db_rows(db, "SELECT count(*) FROM batches")[0][0] == 1  # every task's single call in one batch
    assert db_rows(db, "SELECT count(*), count(batch_id) FROM calls") == [(10, 10)]


def test_a_failed_question_has_a_failures_row(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator()
    emu.fail_next("invalid_json", count=2, match="When does the lease start")  # the answer and its repair
    db = tmp_path / "k.duckdb"
    report = run_pipeline(_leases(tmp_path / "in", 1), db, emu, questions=QUESTIONS)
    assert report.count("failed") == 1
    failures = db_rows(db, "SELECT error_type, message FROM failures")
    assert len(failures) == 1 and "When does the lease start" in failures[0][1], failures
    assert db_rows(db, "SELECT count(*) FROM questions WHERE error IS NOT NULL")[0][0] == 1


def test_questions_share_the_runs_concurrency(tmp_path: Path, make_emulator) -> None:
    """Three long documents' questions at concurrency 2: never more than 2 calls at once."""
    emu = make_emulator(latency_ms=150)
    folder = tmp_path / "in"
    folder.mkdir()
    text = "\n\n".join(
        f"Part {k}. " + " ".join(f"Clause {k}-{w}: the tenant pays rent on day {w}." for w in range(60))
        for k in range(30)
    )
    (folder / "long.txt").write_text(text, encoding="utf-8")
    report = run_pipeline(
        folder, tmp_path / "k.duckdb", emu, questions=QUESTIONS, concurrency=2, model="kimidocs-test-8k"
    )
    assert report.count("ok") == 1, report.outcomes
    assert 1 < emu.stats()["max_concurrency"] <= 2, emu.stats()


def test_a_budget_stop_in_questions_reports_what_was_spent(tmp_path: Path, make_emulator) -> None:
    """A cap that lets the first question's call start (its reservation: prompt at the miss price and all
    of max_tokens) but not the second: the outcome carries what the first one cost, not $0."""
    emu = make_emulator()
    folder = _leases(tmp_path / "in", 1)
    run_pipeline(folder, tmp_path / "p.duckdb", emu, questions=QUESTIONS[:1])
    (prompt_est,) = db_rows(tmp_path / "p.duckdb", "SELECT prompt_tokens_est FROM calls")[0]
    (max_tokens,) = [e["max_tokens"] for e in emu.requests("/chat/completions")]
    reservation = request_estimate(prompt_est, max_tokens, get_model("kimi-k2.5"))
    db = tmp_path / "k.duckdb"
    report = run_pipeline(
        folder, db, emu, questions=QUESTIONS, max_cost_usd=reservation * 1.05, concurrency=1
    )
    stored = db_rows(db, "SELECT coalesce(sum(cost_usd), 0) FROM calls")[0][0]
    assert stored > 0 and report.cost_usd == pytest.approx(stored), (report.outcomes, stored)
    assert report.outcomes[0].error_type == "BudgetExceeded"
