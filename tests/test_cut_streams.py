"""Defect: streamed attempts cut before `[DONE]` were billed by the server but by nobody here (issue 22.3).
Each attempt that reached the server is now a `calls` row (`interrupted`, usage as the server sent it or
our estimate marked `estimated`), counted in the document's and the run's cost and against the cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

# Above the client's streaming threshold (64k prompt tokens): the call streams, and can be cut.
LONG_TEXT = "Clause {n}. The tenant pays 1,200 EUR on the first day of each month to the landlord.\n"


def _long_document(folder: Path) -> None:
    folder.mkdir()
    (folder / "lease.txt").write_text("".join(LONG_TEXT.format(n=n) for n in range(4_500)))


def test_cut_streams_are_logged_and_billed(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator()
    folder = tmp_path / "in"
    _long_document(folder)
    emu.fail_next("truncate", count=2)
    report = run_pipeline(folder, tmp_path / "k.duckdb", emu)
    assert report.count("ok") == 1
    attempts = emu.requests("/chat/completions")
    assert len(attempts) == 3  # two cut, one whole
    rows = db_rows(
        tmp_path / "k.duckdb",
        "SELECT status, usage_source, prompt_tokens, completion_tokens, cost_usd, attempts, error "
        "FROM calls ORDER BY started_at, status",
    )
    cut = [r for r in rows if r[0] == "interrupted"]
    done = [r for r in rows if r[0] == "ok"]
    assert len(cut) == 2 and len(done) == 1, rows
    assert sorted(r[5] for r in cut) == [1, 2] and done[0][5] == 3
    for _status, source, prompt, completion, cost, _attempts, error in cut:
        assert source == "estimated" and prompt > 64_000 and completion > 0 and cost > 0
        assert "stream" in error
    # a cut attempt read the whole prompt: estimated at the miss price, never below the whole call's
    assert all(r[4] >= done[0][4] * 0.9 for r in cut)
    stored = sum(r[4] for r in rows)
    assert report.cost_usd == pytest.approx(stored)
    (doc_cost,) = db_rows(tmp_path / "k.duckdb", "SELECT cost_usd FROM document_costs")[0]
    assert doc_cost == pytest.approx(stored)


def test_cut_streams_count_against_the_cap(tmp_path: Path, make_emulator) -> None:
    """Two documents; the first one's cut attempts use up the cap, so the second is never started.
    (Without them counted, one call's cost is far under the cap and the second would start.) Retries
    are not reserved one by one: the overshoot is bounded by the retried attempts of calls in flight."""
    emu = make_emulator()
    folder = tmp_path / "in"
    _long_document(folder)
    (folder / "second.txt").write_text((folder / "lease.txt").read_text().replace("tenant", "lessee"))
    probe = run_pipeline(folder, tmp_path / "probe.duckdb", emu, max_cost_usd=None)
    one_call = max(o.cost_usd for o in probe.outcomes)
    emu.reset()
    emu.fail_next("truncate", count=2)
    cap = one_call * 2.5  # enough for both documents without cuts, not with two cut attempts
    report = run_pipeline(folder, tmp_path / "k.duckdb", emu, max_cost_usd=cap, concurrency=1)
    assert report.count("ok") == 1 and report.count("skipped") == 1, report.outcomes
    assert report.cost_usd > 2 * one_call  # the cut attempts are the run's spending
    assert report.cost_usd <= cap + 2 * one_call  # at most the retries of the one call in flight
