"""Full-text search after runs (issue 22 item 5): runs never index, so a run does not pay for what earlier
runs stored; `search` indexes what changed since it last ran, and one pathological page costs at most
`MAX_INDEXED_CHARS` characters of index."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from conftest import db_rows, run_pipeline

from extractors.document import Document, Page
from kimidocs.core.records import FileRecord
from kimidocs.store import Store
from kimidocs.store.connection import CONFIG, load_fts
from kimidocs.store.search_index import MAX_INDEXED_CHARS

FILLER = "The north crew serviced the pumps and wrote the log for the quarter. "


def _schemas(db: Path) -> list[str]:
    return [name for (name,) in db_rows(db, "SELECT schema_name FROM duckdb_schemas()")]


def test_runs_leave_indexing_to_search_which_finds_every_page_within_the_bound(
    tmp_path: Path, kimi_emulator
) -> None:
    folder, db = tmp_path / "in", tmp_path / "k.duckdb"
    folder.mkdir()
    (folder / "a.txt").write_text(f"Memo A\n\n{FILLER * 5}An aardvark was seen near pump 4.\n")
    assert run_pipeline(folder, db, kimi_emulator, concurrency=1).count("ok") == 1
    store = Store(db, read_only=True)
    assert "fts_main_pages" not in _schemas(db) and not store.search_index().file.exists()  # no index yet

    hits = store.search("aardvark")
    assert [(Path(h.path or "").name, h.page_no) for h in hits] == [("a.txt", 1)]
    assert "aardvark" in hits[0].snippet

    # A later run adds a document, and a page of ~400,000 characters on one line (a pathological page):
    # "quokka" ~100,000 characters in, "wombat" ~300,000 in, past the bound.
    (folder / "b.txt").write_text(f"Memo B\n\n{FILLER * 5}A bandicoot nested in the valve house.\n")
    filler = FILLER * (100_000 // len(FILLER))
    (folder / "huge.txt").write_text(f"{filler}quokka {filler * 2}wombat {filler}")
    report = run_pipeline(folder, db, kimi_emulator, concurrency=1)
    assert report.count("ok") == 2 and report.count("unchanged") == 1
    assert "fts_main_pages" not in _schemas(db) and store.search_index().file.exists()  # the run left it

    assert [Path(h.path or "").name for h in store.search("bandicoot")] == ["b.txt"]
    assert [Path(h.path or "").name for h in store.search("aardvark")] == ["a.txt"]
    assert [Path(h.path or "").name for h in store.search("quokka")] == ["huge.txt"]  # within the bound
    ((huge_id, chars),) = db_rows(db, "SELECT doc_id, chars FROM pages WHERE contains(text, 'wombat')")
    assert chars > MAX_INDEXED_CHARS  # the store keeps the whole page; the index, its first 200,000 chars
    assert store.search("wombat") == []
    with duckdb.connect(str(store.search_index().file), read_only=True, config=CONFIG) as con:
        (indexed,) = con.execute("SELECT max(length(text)) FROM pages WHERE doc_id = ?", [huge_id]).fetchone()
    assert indexed == MAX_INDEXED_CHARS


def _document(doc_id: str, texts: list[str]) -> Document:
    return Document(
        path=f"in/{doc_id}.txt",
        sha256=doc_id,
        kind="text",
        size=sum(map(len, texts)),
        pages=tuple(Page(n, t) for n, t in enumerate(texts, 1)),
        extractor_version="1",
    )


def _fts_scores(index_file: Path, terms: str) -> dict[tuple[str, int], float]:
    """What DuckDB's own fts index (create_fts_index + match_bm25, as runs used to build it) scores over
    the same page texts."""
    con = duckdb.connect(config=CONFIG)
    try:
        load_fts(con)
        con.execute(f"ATTACH '{index_file}' AS ours (READ_ONLY)")
        con.execute("CREATE TABLE pages AS SELECT page_id, doc_id, page_no, text FROM ours.pages")
        con.execute(
            "PRAGMA create_fts_index('pages', 'page_id', 'text', stemmer = 'porter', "
            "stopwords = 'english', strip_accents = 1, lower = 1, overwrite = 1)"
        )
        rows = con.execute(
            "SELECT doc_id, page_no, score FROM (SELECT *, fts_main_pages.match_bm25(page_id, ?) AS score "
            "FROM pages) WHERE score IS NOT NULL",
            [terms],
        ).fetchall()
    finally:
        con.close()
    return {(d, p): s for d, p, s in rows}


def test_incremental_scores_are_those_of_duckdbs_fts_index_over_the_same_pages(tmp_path: Path) -> None:
    """The index adds and drops pages one by one and must still score as `match_bm25` over all of them
    (BM25 with the collection's statistics: a page added later is not ranked as if alone)."""
    rng = random.Random(5)
    words = ["the", "pump", "Pumps", "pumping", "valve", "valves", "crew", "café", "naïve", "report"]
    words += ["2024", "it's", "a-b", "invoice", "and", "of"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 60))) + ". Done, (ok)!"

    db = tmp_path / "k.duckdb"
    store = Store(db)
    for i in range(8):
        doc = _document(f"d{i}", [text() for _ in range(rng.randint(1, 4))])
        store.save_document(doc, FileRecord(doc.path, doc.sha256, doc.size, datetime(2026, 1, 1)))
    store.close()
    reader = Store(db, read_only=True)
    queries = ("pump valve", "cafe naive", "pumping invoices report", "the of and", "zebra", "2024 crew")
    for round_ in range(3):
        for query in queries:
            ours = {(h.doc_id, h.page_no): h.score for h in reader.search(query, limit=100)}
            theirs = _fts_scores(reader.search_index().file, query)
            assert ours.keys() == theirs.keys(), (round_, query)
            assert all(abs(ours[k] - theirs[k]) < 1e-9 for k in ours), (round_, query)
        # the next round: one document re-extracted, one new, one removed
        again = _document(f"d{round_}", [text(), text()])
        store.save_document(again, FileRecord(again.path, again.sha256, again.size, datetime(2026, 1, 2)))
        new = _document(f"n{round_}", [text()])
        store.save_document(new, FileRecord(new.path, new.sha256, new.size, datetime(2026, 1, 2)))
        store.close()
        with duckdb.connect(str(db), config=CONFIG) as con:
            con.execute("DELETE FROM pages WHERE doc_id = ?", [f"d{7 - round_}"])
            con.execute("DELETE FROM documents WHERE doc_id = ?", [f"d{7 - round_}"])
        assert reader.refresh_search_index().copied == 3  # the two pages re-extracted and the new one


def test_an_index_file_that_cannot_be_written_is_one_store_error_and_where_names_the_file(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from kimidocs.cli import app
    from kimidocs.store import SearchIndexUnusable

    db = tmp_path / "k.duckdb"
    store = Store(db)
    doc = _document("d1", ["a page about pumps"])
    store.save_document(doc, FileRecord(doc.path, doc.sha256, doc.size, datetime(2026, 1, 1)))
    store.close()
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(SearchIndexUnusable, match="cannot build the full-text index there"):
        Store(db, read_only=True, search_cache=tmp_path / "not-a-folder").search("pumps")
    shown = CliRunner().invoke(app, ["where", "search-index", "--db", str(db)])
    assert shown.exit_code == 0 and shown.output.strip() == str(Store(db, read_only=True).search_index().file)
