"""The whole pipeline over real documents, real DuckDB and the emulator over a socket."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

from kimidocs.run import pipeline

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"


def _run(folder: Path, db: Path, handle, **options) -> pipeline.RunReport:
    return run_pipeline(folder, db, handle, **options)


def _rows(db: Path, sql: str) -> list[tuple]:
    return db_rows(db, sql)


@pytest.fixture()
def mixed_folder(tmp_path: Path, corpus: Path) -> Path:
    """The samples plus bad files: one of each failure kind."""
    folder = tmp_path / "inbox"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    for bad in (
        "bad/libreoffice-writer-password.pdf",
        "bad/empty.pdf",
        "bad/multi_page-truncated.pdf",
        "bad/fake-doc-binary-with-docx-extension.docx",
        "pdf/testOCR.pdf",
    ):
        shutil.copy(corpus / bad, folder / Path(bad).name)
    return folder


def test_samples_fill_every_table_and_bad_files_are_recorded(
    mixed_folder: Path, tmp_path: Path, kimi_emulator
) -> None:
    db = tmp_path / "k.duckdb"
    report = _run(mixed_folder, db, kimi_emulator)
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert {n for n, o in by_name.items() if o.status == "ok"} == {
        "crazyones.pdf",
        "multi_page.pdf",
        "code_and_formula.pdf",
        "lorem_ipsum.docx",
        "word_tables.docx",
        "testOCR.pdf",  # scanned: sent to kimi-k2.5 as page images
    }
    assert by_name["libreoffice-writer-password.pdf"].error_type == "EncryptedDocument"
    assert by_name["empty.pdf"].error_type == "EmptyDocument"
    assert by_name["multi_page-truncated.pdf"].error_type == "CorruptDocument"
    assert by_name["fake-doc-binary-with-docx-extension.docx"].error_type == "UnsupportedFormat"
    for table in ("documents", "files", "pages", "runs", "calls", "summaries", "failures"):
        assert _rows(db, f"SELECT count(*) FROM {table}")[0][0] > 0, table
    failures = dict(_rows(db, "SELECT error_type, message FROM failures"))
    assert "libreoffice-writer-password.pdf" in failures["EncryptedDocument"]
    summaries = _rows(db, "SELECT backend, coverage, len(key_points) FROM summaries")
    assert len(summaries) == 6
    assert all(b == "emulator" and cov == 1.0 and kp > 0 for b, cov, kp in summaries)
    # every cited page exists in the cited document
    bad_cites = _rows(
        db,
        """
        SELECT count(*) FROM summaries s, unnest(s.key_points) AS k(kp), unnest(kp.pages) AS p(page)
        WHERE page < 1 OR page > s.pages_total""",
    )
    assert bad_cites[0][0] == 0
    assert report.failed  # the CLI exits non-zero when a document failed


def test_second_run_makes_no_calls_and_leaves_identical_tables(tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    folder = tmp_path / "in"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    first = _run(folder, db, kimi_emulator)
    assert first.count("ok") == 5
    snapshot = {
        t: _rows(db, f"SELECT * EXCLUDE (run_id, created_at) FROM {t} ORDER BY ALL") for t in ("summaries",)
    }
    snapshot["documents"] = _rows(db, "SELECT * EXCLUDE (extracted_at) FROM documents ORDER BY ALL")
    snapshot["pages"] = _rows(db, "SELECT * FROM pages ORDER BY ALL")
    chat_before = [r for r in kimi_emulator.requests() if r["path"].endswith("/chat/completions")]
    second = _run(folder, db, kimi_emulator)
    chat_after = [r for r in kimi_emulator.requests() if r["path"].endswith("/chat/completions")]
    assert second.count("unchanged") == 5
    assert len(chat_after) == len(chat_before)
    assert (
        _rows(db, "SELECT * EXCLUDE (run_id, created_at) FROM summaries ORDER BY ALL")
        == snapshot["summaries"]
    )
    assert _rows(db, "SELECT * EXCLUDE (extracted_at) FROM documents ORDER BY ALL") == snapshot["documents"]
    assert _rows(db, "SELECT * FROM pages ORDER BY ALL") == snapshot["pages"]
    assert _rows(db, "SELECT count(*) FROM runs")[0][0] == 2


def test_long_document_map_reduce_with_small_window(tmp_path: Path, corpus: Path, kimi_emulator) -> None:
    """A 5-page PDF with an 8K-window model: several chunks, reduce levels, citations of real pages."""
    folder = tmp_path / "long"
    folder.mkdir()
    shutil.copy(corpus / "pdf/redp5110_sampled.pdf", folder)
    db = tmp_path / "k.duckdb"
    report = _run(folder, db, kimi_emulator, model="kimidocs-test-8k")
    (outcome,) = report.outcomes
    assert outcome.status == "ok", outcome
    assert outcome.strategy == "map_reduce"
    assert outcome.coverage == 1.0
    stages = dict(_rows(db, "SELECT stage, count(*) FROM calls GROUP BY stage"))
    assert stages["map"] >= 2 and stages["reduce"] >= 1  # 2 since the system prompt shrank by 280 tokens
    pages = _rows(
        db,
        """
        SELECT DISTINCT page FROM summaries s, unnest(s.key_points) AS k(kp), unnest(kp.pages) AS p(page)""",
    )
    cited = {p for (p,) in pages}
    assert cited and max(cited) <= 18 and len(cited) >= 3  # citations spread over the document
    cached = _rows(db, "SELECT sum(cached_tokens) FROM calls WHERE stage = 'map'")[0][0]
    # Map calls share only the system prompt: its first goes alone to warm it only when enough calls
    # re-read it to pay for the wait (kimidocs/core/schedule.py); then the others read it from the cache.
    (decision,) = [d for d in report.scheduling if " map: " in d]
    assert "first call alone" in decision or "all start together" in decision
    if "first call alone" in decision:
        assert cached > 0


def test_dry_run_plans_without_calls(tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    report = _run(SAMPLES, db, kimi_emulator, dry_run=True)
    assert {o.status for o in report.outcomes} == {"planned"}
    assert report.cost_usd_est > 0
    assert not [r for r in kimi_emulator.requests() if r["path"].endswith("/chat/completions")]


def test_budget_cap_skips_documents_cleanly(tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    report = _run(SAMPLES, db, kimi_emulator, max_cost_usd=0.0, concurrency=1)
    assert report.count("skipped") == 5
    assert {o.error_type for o in report.outcomes} == {"BudgetExceeded"}
    assert _rows(db, "SELECT count(*) FROM failures WHERE error_type = 'BudgetExceeded'")[0][0] == 5
    assert not [r for r in kimi_emulator.requests() if r["path"].endswith("/chat/completions")]


def test_a_file_that_vanishes_mid_run_is_recorded_and_the_batch_goes_on(
    tmp_path: Path, kimi_emulator
) -> None:
    """Discovery saw it, then it was moved away before analysis: a recorded failure, not a crash."""
    from datetime import UTC, datetime

    from kimidocs.run.discover import FoundFile
    from kimidocs.run.settings import Settings

    db = tmp_path / "k.duckdb"
    settings = Settings(
        KIMI_API_KEY=kimi_emulator.api_key,
        KIMI_BASE_URL=kimi_emulator.base_url,
        KIMIDOCS_DB=str(db),
        _env_file=None,
    )
    ctx = pipeline.open_run(pipeline.RunOptions(folder=str(SAMPLES), db=str(db)), settings)
    gone = FoundFile(str(tmp_path / "moved-away.pdf"), 1234, datetime.now(UTC))
    real = pipeline.list_files(ctx)[0]
    outcomes = [pipeline.analyze_file(ctx, gone), pipeline.analyze_file(ctx, real)]
    report = pipeline.close_run(ctx, outcomes)
    assert outcomes[0].status == "failed" and outcomes[0].error_type == "FileNotFoundError"
    assert "moved-away.pdf" in (outcomes[0].message or "")
    assert outcomes[1].status == "ok"
    assert _rows(db, "SELECT stage, error_type FROM failures") == [("pipeline", "FileNotFoundError")]
    assert report.count("ok") == 1 and report.count("failed") == 1
