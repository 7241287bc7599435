"""Full-text search from a local index file of this machine, updated incrementally; never in the store.

Runs do not index. When they did (`PRAGMA create_fts_index` over all pages at the end of each run), every
run paid for the whole store: 8.9 s instead of 1.7 s for one small PDF over a store holding 2 million
words, minutes with a 52 MB page in it. DuckDB's fts extension cannot add to an index, so the index here is
kept in tables of our own, in which a page is added or removed by itself, and scored with the extension's
own BM25 formula (`match_bm25`: k = 1.2, b = 0.75, the same tokenizer, Porter stemmer and English stop
words, taken from the extension). `Store.search` brings the file up to date first:

- The store is read once, in one read transaction: every document's stamp (`extracted_at` and page count;
  a document's pages are only ever replaced together with its row) and path. The pages of documents whose
  stamp differs from the one indexed, or that are new, are copied out (through a Parquet file: a read-only
  DuckDB cannot write into another database); documents no longer stored are dropped. Only those pages
  are tokenized: the cost follows what changed, not what is stored.
- The update goes into a copy of the file that replaces it (`os.replace`): a concurrent search reads the
  old file or the new one, never half of either; the store's own file is held only while rows are read.
- One pathological page costs at most `MAX_INDEXED_CHARS`: only the first 200,000 characters of a page are
  indexed (a dense honest PDF page holds ~5,000; a page that long is a text file on one line).

A DuckDB file and a DuckLake are searched alike (a read-only store cannot hold an index, and
`create_fts_index` cannot index a DuckLake table). The file is `<cache>/<store key>.duckdb`, by default
under ~/.cache/kimidocs/search/; deleting it costs the next search a full build.

    index file: indexed(doc_id, stamp)             the version of each document whose pages it holds
                pages(page_id, doc_id, page_no, text, len)   text cut to MAX_INDEXED_CHARS; len in terms
                terms(doc_id, page_id, term, tf)   stemmed terms of each page, with their counts
                fts_main_vocabulary                the extension's tokenizer and stop words (an index of
                                                   an empty table)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from kimidocs.store.connection import CONFIG, load_fts

#: Characters of one page that are indexed: a word further into a longer page is not found by search.
MAX_INDEXED_CHARS = 200_000
#: Of the index file's tables: a file of another version is built again.
FORMAT = 1
K1, B = 1.2, 0.75  # BM25 parameters, as the fts extension's match_bm25 defaults
ABANDONED_AFTER_S = 3600.0

# Run on the store (a DuckDB file or a lake, in one read transaction).
STAMPS_SQL = "SELECT doc_id, concat(extracted_at::VARCHAR, '/', coalesce(pages, 0)), path FROM documents"
COPY_SQL = (
    "COPY (SELECT page_id, doc_id, page_no, left(text, {max_chars}) AS text FROM pages "
    "WHERE doc_id IN (SELECT unnest(?::VARCHAR[]))) TO '{target}' (FORMAT parquet)"
)
CREATE_SQL = f"""
CREATE TABLE format (version INTEGER NOT NULL);
INSERT INTO format VALUES ({FORMAT});
CREATE TABLE indexed (doc_id VARCHAR PRIMARY KEY, stamp VARCHAR NOT NULL);
CREATE TABLE pages (page_id VARCHAR NOT NULL, doc_id VARCHAR NOT NULL, page_no INTEGER NOT NULL,
                    text VARCHAR NOT NULL, len BIGINT NOT NULL);
CREATE TABLE terms (doc_id VARCHAR NOT NULL, page_id VARCHAR NOT NULL, term VARCHAR NOT NULL,
                    tf BIGINT NOT NULL);
CREATE TABLE vocabulary (id VARCHAR, text VARCHAR);
PRAGMA create_fts_index('vocabulary', 'id', 'text', stemmer = 'porter', stopwords = 'english',
                        strip_accents = 1, lower = 1);
"""
# `incoming`: the pages copied from the store. As create_fts_index tokenizes, stems and drops stop words.
ADD_TERMS_SQL = """
INSERT INTO terms
SELECT doc_id, page_id, stem(w, 'porter') AS term, count(*) AS tf
FROM (SELECT doc_id, page_id, unnest(fts_main_vocabulary.tokenize(text)) AS w FROM incoming)
WHERE w IS NOT NULL AND len(w) > 0 AND w NOT IN (SELECT sw FROM fts_main_vocabulary.stopwords)
GROUP BY ALL
"""
ADD_PAGES_SQL = """
INSERT INTO pages
SELECT i.page_id, i.doc_id, i.page_no, i.text, coalesce(t.len, 0)
FROM incoming AS i
LEFT JOIN (SELECT page_id, sum(tf) AS len FROM terms GROUP BY page_id) AS t USING (page_id)
"""
# match_bm25's formula over every indexed page: IDF from the pages holding the term, length from `len`.
SEARCH_SQL = f"""
WITH tokens AS (SELECT DISTINCT stem(unnest(fts_main_vocabulary.tokenize(?)), 'porter') AS term),
stats AS (SELECT count(*) AS num_docs, avg(len) AS avgdl FROM pages),
hits AS (SELECT page_id, term, tf FROM terms WHERE term IN (SELECT term FROM tokens)),
df AS (SELECT term, count(*) AS df FROM hits GROUP BY term),
scores AS (
    SELECT h.page_id,
           sum(log((s.num_docs - d.df + 0.5) / (d.df + 0.5) + 1)
               * (h.tf * ({K1} + 1) / (h.tf + {K1} * (1 - {B} + {B} * (p.len / s.avgdl))))) AS score
    FROM hits AS h JOIN df AS d USING (term) JOIN pages AS p USING (page_id), stats AS s
    GROUP BY h.page_id
)
SELECT p.doc_id, p.page_no, s.score, p.text
FROM scores AS s JOIN pages AS p USING (page_id)
ORDER BY s.score DESC, p.doc_id, p.page_no
LIMIT ?
"""

Reader = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "kimidocs" / "search"


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh found: pages in the index, pages copied from the store now (0: nothing changed),
    and every stored document's path (for the hits)."""

    pages: int
    copied: int
    paths: dict[str, str | None]


class SearchIndex:
    """The local search file of one store."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def indexed(self) -> dict[str, str] | None:
        """doc_id -> stamp of the documents the file holds; None: no usable file yet."""
        if not self.file.exists():
            return None
        try:
            with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
                return _indexed(con)
        except duckdb.Error:  # an unfinished file, or another format: built again from the store
            return None

    def refresh(self, read: Reader) -> Refreshed:
        """Bring the file up to date with the store that `read` opens, indexing only what changed."""
        usable = self.indexed()
        have = usable or {}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._forget_abandoned()
        incoming = self._temporary(".parquet")
        try:
            with read() as con:
                rows = con.execute(STAMPS_SQL).fetchall()
                stamps = {doc_id: stamp for doc_id, stamp, _ in rows}
                changed = sorted(d for d, s in stamps.items() if have.get(d) != s)
                if changed:
                    copy = COPY_SQL.format(max_chars=MAX_INDEXED_CHARS, target=_quoted(incoming))
                    con.execute(copy, [changed])
            paths = {doc_id: path for doc_id, _, path in rows}
            copied = 0
            if changed or set(have) - set(stamps) or usable is None:
                copied = self._update(stamps, changed, incoming, fresh_start=usable is None)
        finally:
            incoming.unlink(missing_ok=True)
        return Refreshed(self._count(), copied, paths)

    def _temporary(self, suffix: str) -> Path:
        """A file of this process and call only, next to the index file."""
        return self.file.with_name(f"{self.file.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")

    def _forget_abandoned(self) -> None:
        """Temporary files of updates that were killed midway (an update takes seconds, not an hour)."""
        for stale in self.file.parent.glob(f"{self.file.stem}.*.tmp*"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > ABANDONED_AFTER_S:
                    stale.unlink()

    def _update(
        self, stamps: dict[str, str], changed: list[str], incoming: Path, *, fresh_start: bool
    ) -> int:
        """A copy of the file (or a new one) without the documents the store no longer holds as indexed,
        with the pages of `changed` (in `incoming`) added, swapped in. Returns the pages added."""
        fresh = self._temporary(".duckdb")
        try:
            if not fresh_start:
                shutil.copyfile(self.file, fresh)  # a finished file: only ever replaced, never written
            with duckdb.connect(str(fresh), config=CONFIG) as con:
                load_fts(con)
                if fresh_start:
                    for statement in CREATE_SQL.split(";"):  # one by one: the PRAGMA needs its table
                        if statement.strip():
                            con.execute(statement)
                # What the copy holds (another search may have replaced the file since `have` was read).
                renewed = set(changed)
                drop = [d for d, s in _indexed(con).items() if stamps.get(d) != s or d in renewed]
                con.execute("BEGIN TRANSACTION")
                for table in ("terms", "pages", "indexed"):
                    con.execute(f"DELETE FROM {table} WHERE doc_id IN (SELECT unnest(?::VARCHAR[]))", [drop])
                added = 0
                if changed:
                    con.execute(
                        f"CREATE TEMP TABLE incoming AS SELECT * FROM read_parquet('{_quoted(incoming)}')"
                    )
                    con.execute(ADD_TERMS_SQL)
                    added = int(con.execute(ADD_PAGES_SQL).fetchone()[0])  # type: ignore[index]
                    con.execute(
                        "INSERT INTO indexed SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[])",
                        [changed, [stamps[d] for d in changed]],
                    )
                con.execute("COMMIT")
        except BaseException:
            fresh.unlink(missing_ok=True)
            raise
        os.replace(fresh, self.file)
        return added

    def _count(self) -> int:
        with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
            row = con.execute("SELECT count(*) FROM pages").fetchone()
        return int(row[0]) if row else 0

    def search(self, terms: str, limit: int) -> list[tuple[str, int, float, str]]:
        """(doc_id, page_no, score, indexed text) ranked by BM25, best first (call `refresh` first)."""
        with duckdb.connect(str(self.file), read_only=True, config=CONFIG) as con:
            load_fts(con)
            return con.execute(SEARCH_SQL, [terms, limit]).fetchall()


def _indexed(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """doc_id -> stamp in an index file of this FORMAT (raises duckdb.Error for anything else)."""
    version = con.execute("SELECT max(version) FROM format").fetchone()
    if not version or version[0] != FORMAT:
        raise duckdb.CatalogException(f"search index format {version}, not {FORMAT}")
    return dict(con.execute("SELECT doc_id, stamp FROM indexed").fetchall())


def _quoted(path: Path) -> str:
    """`path` inside a single-quoted SQL string."""
    return str(path).replace("'", "''")
