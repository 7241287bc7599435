"""Full-text search over a lake: a BM25 index in a local DuckDB replica of the pages.

`create_fts_index` cannot index a DuckLake table (its index is a set of ordinary tables and macros
in a schema of the same database). So each machine that searches keeps a small local DuckDB file
(pages with their document's path) copied from one lake snapshot and indexed by the fts extension.
It is rebuilt when the lake's snapshot moved on, into a fresh file swapped in with `os.replace`, so a
concurrent search reads the old one or the new one, never half of either.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from kimidocs.store.connection import CONFIG, load_fts
from kimidocs.store.lake import ALIAS, LakeEngine

INDEX_SQL = (
    "PRAGMA create_fts_index('pages', 'page_id', 'text', stemmer = 'porter', "
    "stopwords = 'english', strip_accents = 1, lower = 1, overwrite = 1)"
)
SEARCH_SQL = """SELECT doc_id, path, page_no, score, text
   FROM (SELECT *, fts_main_pages.match_bm25(page_id, ?) AS score FROM pages)
   WHERE score IS NOT NULL
   ORDER BY score DESC, doc_id, page_no
   LIMIT ?"""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "kimidocs" / "lake-search"


class SearchReplica:
    """The local search file of one lake."""

    def __init__(self, engine: LakeEngine, cache_dir: Path | None = None) -> None:
        self.engine = engine
        self.file = (cache_dir or default_cache_dir()) / f"{engine.location.key}.duckdb"

    def snapshot(self) -> int | None:
        """The lake snapshot the replica was copied from (None: no replica yet)."""
        if not self.file.exists():
            return None
        with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
            row = con.execute("SELECT snapshot_id FROM replica_of").fetchone()
        return int(row[0]) if row else None

    def refresh(self, *, force: bool = False) -> int:
        """Copy and index the pages when the lake changed since the copy (or `force`); returns pages."""
        current = self.engine.snapshot_id()
        if not force and self.snapshot() == current:
            with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
                row = con.execute("SELECT count(*) FROM pages").fetchone()
            return int(row[0]) if row else 0
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.file.with_name(f"{self.file.stem}.{os.getpid()}.tmp.duckdb")
        fresh.unlink(missing_ok=True)
        target = str(fresh).replace("'", "''")
        try:
            with self.engine.session() as con:
                con.execute(f"ATTACH '{target}' AS replica")
                try:
                    _copy_pages(con)
                finally:
                    con.execute("DETACH replica")
            with duckdb.connect(str(fresh), config=CONFIG) as con:
                load_fts(con)
                con.execute(INDEX_SQL)
                row = con.execute("SELECT count(*) FROM pages").fetchone()
        except BaseException:
            fresh.unlink(missing_ok=True)
            raise
        os.replace(fresh, self.file)
        return int(row[0]) if row else 0

    def search(self, terms: str, limit: int) -> list[tuple[str, str | None, int, float, str]]:
        """(doc_id, path, page_no, score, text) ranked by BM25, from a replica of the current snapshot."""
        self.refresh()
        with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
            load_fts(con)
            return con.execute(SEARCH_SQL, [terms, limit]).fetchall()


def _copy_pages(con: duckdb.DuckDBPyConnection) -> None:
    """Pages with their document's path, and the snapshot they come from, in one read transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        snap = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()
        con.execute(
            "CREATE TABLE replica.pages AS SELECT p.page_id, p.doc_id, p.page_no, p.text, d.path "
            f"FROM {ALIAS}.pages AS p LEFT JOIN {ALIAS}.documents AS d ON d.doc_id = p.doc_id"
        )
        con.execute(
            "CREATE TABLE replica.replica_of AS SELECT ?::BIGINT AS snapshot_id", [snap[0] if snap else 0]
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
