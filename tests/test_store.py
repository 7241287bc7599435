"""The store on a real DuckDB file: idempotent writes, resume look-ups, views, search, export, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import typer
from test_store_fill import CORPUS_FILES, MODEL, T0, fill, load_document
from typer.testing import CliRunner

from extractors.document import Document, Page
from kimidocs.commands import query as query_command
from kimidocs.core.records import CallRecord, FailureRecord, FileRecord, RunRecord, RunTotals, Usage
from kimidocs.core.results import Summary
from kimidocs.store import DatabaseMissing, QueryError, Store, SummaryRow


def _doc(doc_id: str = "d1", pages: int = 3, path: str = "in/a.pdf") -> Document:
    return Document(
        path=path,
        sha256=doc_id,
        kind="pdf",
        size=1000,
        pages=tuple(Page(i, f"page {i} text about invoices and contracts") for i in range(1, pages + 1)),
        extractor_version="1",
        warnings=("font substitution",),
    )


def _file(doc: Document, path: str | None = None) -> FileRecord:
    return FileRecord(path or doc.path, doc.sha256, doc.size, T0)


def _row(
    doc_id: str = "d1", *, prompt_version: str = "v1", created: datetime = T0, title: str = "T"
) -> SummaryRow:
    s = Summary(summary="s", title=title)
    return SummaryRow(
        doc_id, "summary", prompt_version, MODEL, "r1", "emulator", s, 1.0, 3, 3, s.model_dump_json(), created
    )


def _call(
    call_id: str, key: str, *, status: str = "ok", at: datetime = T0, response: str = "{}"
) -> CallRecord:
    return CallRecord(
        call_id,
        "r1",
        "d1",
        "single",
        key,
        MODEL,
        "emulator",
        usage=Usage(100, 40, 10),
        cost_usd=0.0001,
        status=status,
        response=response,
        started_at=at,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "k.duckdb")
    s.migrate()
    yield s
    s.close()


def _table(store: Store, sql: str) -> list[tuple]:
    return sorted(store.query(sql).rows, key=repr)


def test_migrate_applies_every_migration_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "k.duckdb")
    first = store.migrate()
    assert first == sorted(first) and first[0] == 1 and len(first) >= 3
    assert store.migrate() == []
    assert [r[0] for r in store.query("SELECT version FROM schema_migrations ORDER BY 1").rows] == first
    prices = dict(store.query("SELECT model, price_cache_miss FROM model_prices").rows)
    assert prices[MODEL] == 0.60


def test_save_document_replaces_pages_by_doc_id(store: Store) -> None:
    store.save_document(_doc(pages=3), _file(_doc()), tokens_est=30, page_tokens=[10, 10, 10])
    store.save_document(_doc(pages=2), _file(_doc()), tokens_est=20, page_tokens=[10, 10])
    assert store.query("SELECT pages, tokens_est, warnings FROM documents").rows == (
        (2, 20, ["font substitution"]),
    )
    assert _table(store, "SELECT page_no, page_id, tokens_est FROM pages") == [
        (1, "d1:1", 10),
        (2, "d1:2", 10),
    ]


def test_page_token_counts_must_match_pages(store: Store) -> None:
    with pytest.raises(ValueError, match="2 page token counts for 3 pages"):
        store.save_document(_doc(), _file(_doc()), page_tokens=[1, 2])
    assert store.query("SELECT count(*) FROM documents").rows == ((0,),)


def test_renamed_file_keeps_one_document_and_two_paths(store: Store) -> None:
    doc = _doc()
    store.save_document(doc, _file(doc, "in/a.pdf"))
    store.touch_file(_file(doc, "in/renamed.pdf"))
    assert store.query("SELECT count(*), any_value(path) FROM documents").rows == ((1, "in/renamed.pdf"),)
    assert _table(store, "SELECT path, doc_id, deleted FROM files") == [
        ("in/a.pdf", "d1", False),
        ("in/renamed.pdf", "d1", False),
    ]
    assert store.mark_deleted("in", ["in/renamed.pdf"]) == 1
    assert store.mark_deleted("in", ["in/renamed.pdf"]) == 0
    assert store.mark_deleted("elsewhere", []) == 0
    assert _table(store, "SELECT path, deleted FROM files") == [("in/a.pdf", True), ("in/renamed.pdf", False)]
    first_seen = store.query("SELECT first_seen FROM files WHERE path = 'in/a.pdf'").rows
    store.touch_file(_file(doc, "in/a.pdf"))  # the file came back
    assert store.query("SELECT deleted, first_seen FROM files WHERE path = 'in/a.pdf'").rows == (
        (False, first_seen[0][0]),
    )


def test_failed_file_then_success_replaces_the_failed_row(store: Store) -> None:
    store.save_failed_file("r1", "in/a.pdf", "d1", 1000, T0, "CorruptDocument", "in/a.pdf: no startxref")
    assert store.query("SELECT status, error_type, path FROM documents").rows == (
        ("failed", "CorruptDocument", "in/a.pdf"),
    )
    assert store.query("SELECT stage, error_type, message FROM failures").rows == (
        ("extract", "CorruptDocument", "in/a.pdf: no startxref"),
    )
    store.save_document(_doc(), _file(_doc()))
    assert store.query("SELECT status, error_type FROM documents").rows == (("ok", None),)
    store.save_failed_file("r1", "in/unreadable.pdf", None, None, None, "UnreadableFile", "permission denied")
    assert store.query("SELECT count(*) FROM documents").rows == ((1,),)
    assert store.query("SELECT doc_id FROM files WHERE path = 'in/unreadable.pdf'").rows == ((None,),)


def test_set_document_status_and_record_failure(store: Store) -> None:
    store.save_document(_doc(), _file(_doc()))
    store.set_document_status("d1", "partial", "ChunkFailed", "pages 3-4: length")
    store.record_failure(FailureRecord("r1", "in/a.pdf", "call", "ChunkFailed", "pages 3-4: length", "d1"))
    assert store.query("SELECT status, error_type, error_message FROM documents").rows == (
        ("partial", "ChunkFailed", "pages 3-4: length"),
    )
    assert store.query("SELECT stage, doc_id FROM failures").rows == (("call", "d1"),)


def test_find_completed_call_is_the_newest_ok_call(store: Store) -> None:
    assert store.find_completed_call("k") is None
    store.save_call(_call("c1", "k", at=T0, response="old"))
    store.save_call(_call("c2", "k", at=T0 + timedelta(seconds=5), response="new"))
    store.save_call(_call("c3", "k", at=T0 + timedelta(seconds=9), status="error", response=None))
    found = store.find_completed_call("k")
    assert found is not None
    assert (found.call_id, found.response, found.usage) == ("c2", "new", Usage(100, 40, 10))
    assert found.started_at == T0 + timedelta(seconds=5)


def test_summary_is_replaced_on_its_natural_key(store: Store) -> None:
    assert not store.has_summary("d1", "summary", "v1", MODEL)
    store.save_summary(_row(title="first"))
    store.save_summary(_row(title="second", created=T0 + timedelta(hours=1)))
    assert store.has_summary("d1", "summary", "v1", MODEL)
    assert store.query("SELECT title FROM summaries").rows == (("second",),)
    store.save_summary(_row(prompt_version="v2", title="new prompt", created=T0 + timedelta(hours=2)))
    assert store.query("SELECT count(*) FROM summaries").rows == ((2,),)
    assert store.query("SELECT prompt_version, title FROM latest_summaries").rows == (("v2", "new prompt"),)


def test_summary_can_set_the_document_status_in_the_same_transaction(store: Store) -> None:
    store.save_document(_doc(), _file(_doc()), status="extracted")
    store.save_summary(_row(), document_status="ok")
    assert store.query("SELECT status FROM documents").rows == (("ok",),)


def test_raw_output_that_is_not_json_is_kept_as_a_json_string(store: Store) -> None:
    warnings = store.save_summary(replace(_row(), raw="Sure! Here is the JSON: {oops"))
    assert warnings == ("raw: not valid JSON, stored as a JSON string",)
    assert store.query("SELECT raw::VARCHAR, json_type(raw) FROM summaries").rows == (
        ('"Sure! Here is the JSON: {oops"', "VARCHAR"),
    )


def _snapshot(store: Store) -> dict[str, list[tuple]]:
    """The result tables without the columns that record *when* (they change per run by design)."""
    return {
        "documents": _table(store, "SELECT * EXCLUDE (extracted_at) FROM documents"),
        "pages": _table(store, "SELECT * FROM pages"),
        "files": _table(store, "SELECT * EXCLUDE (first_seen, last_seen) FROM files"),
        "summaries": _table(store, "SELECT * EXCLUDE (created_at, run_id) FROM summaries"),
        "model_prices": _table(store, "SELECT * FROM model_prices"),
        "schema_migrations": _table(store, "SELECT * FROM schema_migrations"),
    }


def test_two_identical_runs_leave_identical_result_tables(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "k.duckdb"
    first = fill(db, corpus)
    before = _snapshot(first.store)
    second = fill(db, corpus, tag="1")  # the same writes again, as a forced rerun would do
    assert _snapshot(second.store) == before
    # the log tables grow by design: one row per call / run / failure event
    assert first.store.query("SELECT count(*) FROM failures").rows == ((2,),)


def test_views_answer_per_document_and_per_run(tmp_path: Path, corpus: Path) -> None:
    filled = fill(tmp_path / "k.duckdb", corpus)
    store = Store(tmp_path / "k.duckdb", read_only=True)
    costs = store.query("SELECT doc_id, calls, cost_usd FROM document_costs").rows
    assert {r[0] for r in costs} == set(filled.doc_ids) and all(r[2] > 0 for r in costs)
    run1, run2 = filled.run_ids
    runs = dict(store.query("SELECT run_id, calls FROM run_costs").rows)
    assert runs[run2] == 0 and runs[run1] == sum(r[1] for r in costs)
    cache = store.query(
        "SELECT cached_share, saved_usd, cost_without_cache_usd - cost_usd FROM cache_efficiency"
    )
    share, saved, diff = cache.rows[0]
    assert 0 < share < 1 and saved == pytest.approx(diff) and saved > 0
    amounts = store.query(
        "SELECT count(*) FILTER (WHERE value IS NOT NULL), count(*) FROM summary_amounts"
    ).rows
    assert amounts == ((2 * len(CORPUS_FILES), 2 * len(CORPUS_FILES)),)
    dates = store.query("SELECT count(*) FILTER (WHERE date IS NULL) FROM summary_dates").rows
    assert dates == ((len(CORPUS_FILES),),)  # "Q3 2021" is kept as text, never guessed
    assert store.query("SELECT count(*) FROM failures_recent").rows == ((1,),)


def test_run_summary_reports_counts_tokens_cost_and_failures(tmp_path: Path, corpus: Path) -> None:
    filled = fill(tmp_path / "k.duckdb", corpus)
    report = filled.store.run_summary(filled.run_ids[0])
    assert report["status"] == "completed" and report["emulated"] is True
    assert report["calls"] == 10 and report["documents_called"] == len(CORPUS_FILES)
    assert 0 < report["cached_share"] < 1 and report["saved_usd"] > 0
    assert report["failures"][0]["error_type"] == "EmptyDocument"
    assert report["coercion_warnings"] == len(CORPUS_FILES)  # one "Q3 2021" per summary
    assert {s["stage"] for s in report["calls_by_stage"]} == {"single", "map", "reduce"}
    with pytest.raises(KeyError, match="no run"):
        filled.store.run_summary("nope")


def test_full_text_search_finds_the_page_and_quotes_it(tmp_path: Path, corpus: Path) -> None:
    fill(tmp_path / "k.duckdb", corpus)
    crazy = load_document(corpus, "pdf/crazyones.pdf")
    hits = Store(tmp_path / "k.duckdb", read_only=True).search("troublemakers rebels", limit=5)
    assert hits and hits[0].doc_id == crazy.sha256 and hits[0].page_no == 1
    assert "troublemakers" in hits[0].snippet.lower()
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_search_indexes_what_changed_since_it_last_ran_on_a_read_only_store(store: Store) -> None:
    """No run builds an index: search does, in a file of its own, copying only the pages of documents
    stored, re-stored or removed since; a read-only store is searched all the same."""
    store.save_document(_doc(), _file(_doc()))
    store.close()
    reader = Store(store.path, read_only=True)
    assert not reader.search_index().file.exists()
    assert [h.page_no for h in reader.search("invoices")] == [1, 2, 3]  # built on first use
    assert (reader.refresh_search_index().pages, reader.refresh_search_index().copied) == (3, 0)
    store.save_document(_doc("d2", pages=2, path="in/b.pdf"), _file(_doc("d2", pages=2, path="in/b.pdf")))
    store.close()
    assert [(h.doc_id, h.path) for h in reader.search("invoices")][-2:] == [("d2", "in/b.pdf")] * 2
    assert reader.refresh_search_index().pages == 5
    changed = replace(_doc(), pages=(Page(1, "a rewritten page about zebras"),))  # d1 extracted again
    store.save_document(changed, _file(changed))
    store.close()
    refreshed = reader.refresh_search_index()
    assert (refreshed.pages, refreshed.copied) == (3, 1)  # d1's one page copied, d2's two kept
    assert [(h.doc_id, h.page_no) for h in reader.search("zebras")] == [("d1", 1)]
    assert {h.doc_id for h in reader.search("invoices")} == {"d2"}
    assert "fts_main_pages" not in str(store.query("SELECT list(schema_name) FROM duckdb_schemas()").rows)


def test_read_only_store_never_writes(store: Store, tmp_path: Path) -> None:
    ro = Store(store.path, read_only=True)
    with pytest.raises(PermissionError, match="read-only"):
        ro.save_call(_call("c1", "k"))
    with pytest.raises(QueryError, match="read-only"):
        ro.query("DELETE FROM pages")
    with pytest.raises(DatabaseMissing, match="no database here yet"):
        Store(tmp_path / "missing.duckdb", read_only=True).query("SELECT 1")


def test_export_writes_every_table_and_view(tmp_path: Path, corpus: Path) -> None:
    fill(tmp_path / "k.duckdb", corpus)
    store = Store(tmp_path / "k.duckdb", read_only=True)
    names = {name for name, _ in store.relations()}
    written = store.export(tmp_path / "out", "parquet")
    assert {p.stem for p in written} == names and {
        "summaries",
        "latest_summaries",
        "summary_amounts",
    } <= names
    back = store.query(
        f"SELECT typeof(amounts), len(amounts) FROM read_parquet('{tmp_path / 'out' / 'summaries.parquet'}')"
    ).rows
    assert len(back) == len(CORPUS_FILES) and back[0][0].startswith("STRUCT")
    csv_files = store.export(tmp_path / "csv", "csv")
    header = (tmp_path / "csv" / "documents.csv").read_text().splitlines()[0]
    assert len(csv_files) == len(written) and header.startswith("doc_id,kind,bytes")


def _cli() -> typer.Typer:
    app = typer.Typer()
    query_command.register(app)
    return app


def test_cli_query_search_export(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "k.duckdb"
    fill(db, corpus)
    runner = CliRunner()
    out = runner.invoke(
        _cli(),
        ["query", "SELECT doc_id, amounts FROM summaries ORDER BY 1", "--db", str(db), "--format", "json"],
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert len(rows) == len(CORPUS_FILES) and rows[0]["amounts"][0]["value_text"]
    out = runner.invoke(_cli(), ["query", "SELECT run_id FROM runs ORDER BY 1", "--db", str(db), "-f", "csv"])
    assert out.output.splitlines() == ["run_id", "run-0001", "run-0002"]
    out = runner.invoke(_cli(), ["query", "SELECT 1 AS a", "--db", str(db), "-f", "markdown"])
    assert out.output.splitlines() == ["| a |", "|---|", "| 1 |"]
    out = runner.invoke(_cli(), ["search", "troublemakers", "--db", str(db), "-n", "1", "-f", "csv"])
    assert out.exit_code == 0 and len(out.output.splitlines()) == 2 and "crazyones" in out.output
    out = runner.invoke(_cli(), ["query", "DROP TABLE pages", "--db", str(db)])
    assert out.exit_code == 1 and "read-only" in out.output
    out = runner.invoke(_cli(), ["export", str(tmp_path / "x"), "--db", str(db), "-f", "csv"])
    assert out.exit_code == 0 and (tmp_path / "x" / "summary_key_points.csv").is_file()


def test_timestamps_are_stored_in_utc(store: Store) -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 3, 2, 9, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    store.start_run(RunRecord("r9", local, "in", "summary", MODEL, "kimi"))
    store.finish_run("r9", RunTotals("completed"))
    assert store.query("SELECT started_at, status FROM runs").rows == (
        (datetime(2026, 3, 2, 1, 30), "completed"),
    )


def test_runs_whose_process_died_on_this_host_are_marked_crashed(store: Store) -> None:
    alive = {101}
    store.start_run(RunRecord("dead", T0, "in", "summary", MODEL, "kimi", host="h1", pid=100))
    store.start_run(RunRecord("live", T0, "in", "summary", MODEL, "kimi", host="h1", pid=101))
    store.start_run(RunRecord("elsewhere", T0, "in", "summary", MODEL, "kimi", host="h2", pid=100))
    store.start_run(RunRecord("done", T0, "in", "summary", MODEL, "kimi", host="h1", pid=102))
    store.finish_run("done", RunTotals("completed"))
    store.start_run(RunRecord("old", T0, "in", "summary", MODEL, "kimi"))  # before schema 4: no owner

    assert store.mark_crashed_runs("h1", lambda pid: pid in alive) == ["dead"]
    rows = dict(_table(store, "SELECT run_id, status FROM runs"))
    assert rows == {
        "dead": "crashed",
        "live": "running",
        "elsewhere": "running",
        "done": "completed",
        "old": "running",
    }
    ((finished, message),) = _table(store, "SELECT finished_at, message FROM runs WHERE run_id = 'dead'")
    assert finished is not None and message == "process 100 on h1 ended without finishing the run"
    assert store.mark_crashed_runs("h1", lambda pid: pid in alive) == []
