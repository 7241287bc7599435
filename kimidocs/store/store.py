"""The store: idempotent writes of documents, calls and summaries; the analysts' reads.

Two engines behind one class. A DuckDB file (the default): every method opens its own short
connection (see `connection.py`), so the file is free between transactions and analysts can query
while a run is going on. A DuckLake (`ducklake:postgres:...`, see `lake.py`): many processes on many
machines write at once; each write holds the advisory locks of the keys it replaces and is re-run
whole when DuckLake reports a conflict (`for attempt in self._attempts(): with attempt, ...`; one
attempt on a file).

Writes replace by natural key (documents and pages by doc_id, summaries by (doc_id, profile,
prompt_version, model), files by path) with DELETE + INSERT, which both engines run (DuckLake has no
keys, so no ON CONFLICT), and two identical runs leave identical result tables; `runs`, `calls` and
`failures` grow by one row per event by design (they are the log).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from kimidocs.core.paths import shown
from kimidocs.core.records import BatchRow, CallRecord, FailureRecord, FileRecord, RunRecord, RunTotals
from kimidocs.store import migrate as migrations
from kimidocs.store.coerce import clean_text, to_datetime
from kimidocs.store.columns import (
    CALL_COLUMNS,
    call_from_row,
    call_values,
    insert_rows_json,
    insert_sql,
    select_sql,
)
from kimidocs.store.connection import OnWait, connect, held, release, transaction
from kimidocs.store.errors import DatabaseUnusable, QueryError, SearchIndexUnusable, StoreError
from kimidocs.store.lake import LakeEngine
from kimidocs.store.lake_sql import translate
from kimidocs.store.location import LakeLocation, is_lake, redact
from kimidocs.store.rows import QueryResult, QuestionRow, SearchHit, SummaryRow, TaskResultRow
from kimidocs.store.search_index import Refreshed, SearchIndex, default_cache_dir
from kimidocs.store.summary_columns import summary_columns
from kimidocs.store.task_columns import task_columns

if TYPE_CHECKING:
    from extractors.document import Document
    from kimidocs.profiles.views import ProfileViews

_DOCUMENT_COLUMNS = (
    "doc_id",
    "kind",
    "bytes",
    "pages",
    "chars",
    "tokens_est",
    "title",
    "author",
    "created",
    "extracted_at",
    "extractor_version",
    "warnings",
    "status",
    "path",
)
_FAILURE_COLUMNS = ("run_id", "path", "doc_id", "stage", "error_type", "message", "failed_at")
_SUMMARY_COLUMNS = (
    "doc_id, profile, prompt_version, model, run_id, backend, created_at, title, document_type, language, "
    "summary, key_points, entities, dates, amounts, coverage, pages_read, pages_total, pages_failed, "
    "coercion_warnings, raw"
)
_TASK_COLUMNS = (
    "doc_id, profile, task, profile_version, task_version, model, run_id, backend, created_at, coverage, "
    "pages_read, pages_total, pages_failed, coercion_warnings, result, raw"
)
# An upsert by path that keeps the first `first_seen`, as DELETE + INSERT (DuckLake has no ON CONFLICT).
_INSERT_FILE = (
    "INSERT INTO files (path, doc_id, size, mtime, first_seen, last_seen, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, false)"
)
SNIPPET_CHARS = 160


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Store:
    """One DuckDB file, or one DuckLake. Cheap to create: nothing is opened until a method needs it.

    `read_only=True` is for analysts' tools (`kimidocs query/search/export`): never writes, never
    migrates, and waits for a running pipeline's write transactions instead of failing.
    `data_path` (KIMIDOCS_LAKE_DATA_PATH) is where a new lake puts its data files; `search_cache` the
    folder of the local full-text index files (search_index.py; default ~/.cache/kimidocs/search).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        lock_timeout_s: float = 30.0,
        on_wait: OnWait | None = None,
        data_path: str | None = None,
        search_cache: Path | None = None,
    ) -> None:
        self.lake: LakeEngine | None = None
        if is_lake(path):
            location = LakeLocation.parse(path, data_path)
            self.lake = LakeEngine(location, read_only=read_only)
            self.path = Path(str(location))  # for messages only: the location without its password
        elif str(path).strip().startswith("ducklake:"):  # never a DuckDB file named "ducklake:..."
            raise DatabaseUnusable(
                redact(str(path)), "not a DuckLake location kimidocs can attach (ducklake:postgres:<libpq>)"
            )
        else:
            self.path = Path(path).expanduser().absolute()
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self.on_wait = on_wait  # read-only opens: told once when a wait for the file gets long
        self.search_cache = search_cache
        self._migrated = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    # ------------------------------------------------------------------ plumbing

    def _attempts(self) -> Iterable[AbstractContextManager[object]]:
        """Tries of one write transaction: one on a file; on a lake, again while DuckLake says conflict."""
        if self.lake is None:
            return (nullcontext(),)
        return self.lake.attempts()

    def _write(self, *keys: str) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A write transaction; on a lake it holds the advisory lock of each natural key in `keys`
        (every key whose row it deletes or updates), so writers of one key take turns."""
        if self.read_only:
            raise PermissionError(f"{self.path}: this Store was opened read-only")
        self._ensure_schema()
        if self.lake is not None:
            return self.lake.transaction(keys)
        return transaction(self.path, timeout_s=self.lock_timeout_s)

    def _read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        if not self.read_only:
            self._ensure_schema()
        if self.lake is not None:
            return self.lake.read()
        if self.read_only:
            return connect(self.path, timeout_s=self.lock_timeout_s, on_wait=self.on_wait)
        return held(self.path, timeout_s=self.lock_timeout_s)

    def _ensure_schema(self) -> None:
        if not self._migrated:
            self.migrate()

    def migrate(self, *, upto: int | None = None) -> list[int]:
        """Apply the missing numbered migrations; returns the versions applied now."""
        if self.read_only:
            raise PermissionError(f"{self.path}: cannot migrate a read-only Store")
        if self.lake is not None:
            with self.lake.schema() as con:
                applied = migrations.apply(con, self.path, upto=upto, translate=translate)
            self._migrated = upto is None
            return applied
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnusable(self.path, f"cannot create its folder: {exc.strerror}") from exc
        with held(self.path, timeout_s=self.lock_timeout_s) as con:
            applied = migrations.apply(con, self.path, upto=upto)
        self._migrated = upto is None
        return applied

    def close(self) -> None:
        """Release the file now instead of after the lease's idle time (end of a run, tests)."""
        if self.lake is not None:
            self.lake.close()
        elif not self.read_only:
            release(self.path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        with self._read() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------------ runs

    def start_run(self, run: RunRecord) -> None:
        for attempt in self._attempts():
            with attempt, self._write(f"runs:{run.run_id}") as con:
                con.execute("DELETE FROM runs WHERE run_id = ?", [run.run_id])
                con.execute(
                    "INSERT INTO runs (run_id, flow_run_id, started_at, folder, profile, model, backend, "
                    "status, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                    [
                        run.run_id,
                        run.flow_run_id,
                        to_datetime(run.started_at),
                        shown(run.folder),
                        run.profile,
                        run.model,
                        run.backend,
                        run.host,
                        run.pid,
                    ],
                )

    # ------------------------------------------------------------------ the run's budget and abort

    def reserve_budget(
        self, run_id: str, reservation_id: str, usd: float, cap: float, holder: str, ttl_s: float
    ) -> tuple[float, float] | None:
        """Hold `usd` of run `run_id`'s `cap` for one call, in one transaction every process of the run
        takes in turn: None when held; else (spent, in flight) that leave no room. Spent is the run's
        logged calls; in flight, the reservations not released and not expired (a process that died)."""
        for attempt in self._attempts():
            with attempt, self._write(f"budget:{run_id}") as con:
                now = utcnow()
                spent = con.execute(
                    "SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = ?", [run_id]
                ).fetchone()
                held = con.execute(
                    "SELECT coalesce(sum(usd), 0) FROM budget_reservations "
                    "WHERE run_id = ? AND expires_at > ?",
                    [run_id, now],
                ).fetchone()
                totals = (float(spent[0]) if spent else 0.0, float(held[0]) if held else 0.0)
                if sum(totals) + usd > cap:
                    return totals
                con.execute(
                    "INSERT INTO budget_reservations VALUES (?, ?, ?, ?, ?, ?)",
                    [reservation_id, run_id, usd, holder, now, now + timedelta(seconds=ttl_s)],
                )
        return None

    def release_budget(self, run_id: str, reservation_id: str) -> None:
        """Give a reservation back (its call is logged now, or was never sent)."""
        for attempt in self._attempts():
            with attempt, self._write(f"budget:{run_id}") as con:
                con.execute("DELETE FROM budget_reservations WHERE reservation_id = ?", [reservation_id])

    def abort_run(self, run_id: str, reason: str) -> None:
        """Say for every process of the run that it stops (the first reason stays)."""
        for attempt in self._attempts():
            with attempt, self._write(f"runs:{run_id}") as con:
                con.execute(
                    "UPDATE runs SET abort_reason = coalesce(abort_reason, ?) WHERE run_id = ?",
                    [reason, run_id],
                )

    def abort_reason(self, run_id: str) -> str | None:
        """Why run `run_id` was stopped by one of its processes, or None."""
        with self._read() as con:
            row = con.execute("SELECT abort_reason FROM runs WHERE run_id = ?", [run_id]).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def mark_crashed_runs(self, host: str, is_alive: Callable[[int], bool]) -> list[str]:
        """Runs still 'running' whose process on `host` is gone -> 'crashed'; returns their ids.

        Only this host's runs: a pid means nothing on another machine sharing the file. A pid
        reused by an unrelated process keeps its run 'running' (wrong the safe way round).
        """
        for attempt in self._attempts():
            with attempt, self._write() as con:
                rows = con.execute(
                    "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
                    [host],
                ).fetchall()
                dead = [(run_id, pid) for run_id, pid in rows if not is_alive(pid)]
                for run_id, pid in dead:
                    con.execute(
                        "UPDATE runs SET status = 'crashed', finished_at = ?, message = ? WHERE run_id = ?",
                        [utcnow(), f"process {pid} on {host} ended without finishing the run", run_id],
                    )
        return [run_id for run_id, _ in dead]

    def finish_run(self, run_id: str, totals: RunTotals) -> None:
        for attempt in self._attempts():
            with attempt, self._write(f"runs:{run_id}") as con:
                con.execute(
                    """UPDATE runs SET finished_at = ?, status = ?, documents_ok = ?, documents_skipped = ?,
                       documents_failed = ?, calls = ?, prompt_tokens = ?, cached_tokens = ?,
                       completion_tokens = ?, cost_usd = ?, message = ? WHERE run_id = ?""",
                    [
                        utcnow(),
                        totals.status,
                        totals.documents_ok,
                        totals.documents_skipped,
                        totals.documents_failed,
                        totals.calls,
                        totals.prompt_tokens,
                        totals.cached_tokens,
                        totals.completion_tokens,
                        totals.cost_usd,
                        clean_text(totals.message),
                        run_id,
                    ],
                )

    # ------------------------------------------------------------------ documents and files

    def save_document(
        self,
        doc: Document,
        file: FileRecord,
        *,
        status: str = "ok",
        tokens_est: int | None = None,
        page_tokens: Sequence[int] | None = None,
    ) -> None:
        """Document, its pages and the file that held it, in one transaction (replacing by doc_id)."""
        if page_tokens is not None and len(page_tokens) != len(doc.pages):
            raise ValueError(f"{doc.path}: {len(page_tokens)} page token counts for {len(doc.pages)} pages")
        now = utcnow()
        for attempt in self._attempts():
            with attempt, self._write(f"documents:{doc.sha256}", f"files:{shown(file.path)}") as con:
                con.execute("DELETE FROM pages WHERE doc_id = ?", [doc.sha256])
                con.execute("DELETE FROM documents WHERE doc_id = ?", [doc.sha256])
                con.execute(
                    insert_sql("documents", _DOCUMENT_COLUMNS),
                    [
                        doc.sha256,
                        doc.kind,
                        doc.size,
                        len(doc.pages),
                        doc.chars,
                        tokens_est,
                        clean_text(doc.title),
                        clean_text(doc.author),
                        clean_text(doc.created),
                        now,
                        doc.extractor_version,
                        [clean_text(w) for w in doc.warnings],
                        status,
                        shown(file.path),
                    ],
                )
                if doc.pages:
                    insert_rows_json(con, "pages", _page_rows(doc, page_tokens))
                _upsert_file(con, file.path, file.doc_id, file.size, file.mtime, now)

    def touch_file(self, file: FileRecord) -> None:
        """A file seen again whose content is already stored: refresh `files` and the document's path."""
        now = utcnow()
        for attempt in self._attempts():
            with attempt, self._write(f"files:{shown(file.path)}", f"documents:{file.doc_id}") as con:
                _upsert_file(con, file.path, file.doc_id, file.size, file.mtime, now)
                con.execute("UPDATE documents SET path = ? WHERE doc_id = ?", [shown(file.path), file.doc_id])

    def save_failed_file(
        self,
        run_id: str,
        file_path: str,
        doc_id: str | None,
        size: int | None,
        mtime: datetime | None,
        error_type: str,
        message: str,
        stage: str = "extract",
    ) -> None:
        """An unreadable file: a `failed` documents row (when its sha256 is known) and a failures row."""
        now = utcnow()
        message = clean_text(message) or ""
        file_path = shown(file_path)
        for attempt in self._attempts():
            with (
                attempt,
                self._write(
                    *([f"documents:{doc_id}"] if doc_id is not None else []), f"files:{file_path}"
                ) as con,
            ):
                if doc_id is not None:
                    con.execute("DELETE FROM pages WHERE doc_id = ?", [doc_id])
                    con.execute("DELETE FROM documents WHERE doc_id = ?", [doc_id])
                    con.execute(
                        "INSERT INTO documents (doc_id, bytes, extracted_at, status, error_type, "
                        "error_message, path, warnings) VALUES (?, ?, ?, 'failed', ?, ?, ?, [])",
                        [doc_id, size, now, error_type, message, file_path],
                    )
                _upsert_file(con, file_path, doc_id, size, mtime, now)
                con.execute(
                    insert_sql("failures", _FAILURE_COLUMNS),
                    [run_id, file_path, doc_id, stage, error_type, message, now],
                )

    def record_failure(self, failure: FailureRecord) -> None:
        for attempt in self._attempts():
            with attempt, self._write() as con:
                con.execute(
                    insert_sql("failures", _FAILURE_COLUMNS),
                    [
                        failure.run_id,
                        shown(failure.path),
                        failure.doc_id,
                        failure.stage,
                        failure.error_type,
                        clean_text(failure.message),
                        to_datetime(failure.at) or utcnow(),
                    ],
                )

    def set_document_status(
        self, doc_id: str, status: str, error_type: str | None = None, error_message: str | None = None
    ) -> None:
        for attempt in self._attempts():
            with attempt, self._write(f"documents:{doc_id}") as con:
                con.execute(
                    "UPDATE documents SET status = ?, error_type = ?, error_message = ? WHERE doc_id = ?",
                    [status, error_type, clean_text(error_message), doc_id],
                )

    def mark_deleted(self, folder: str, present_paths: Iterable[str]) -> int:
        """Files under `folder` that were not seen in this walk -> deleted = true; returns how many."""
        prefix = shown(folder).rstrip("/") + "/"
        present = {shown(p) for p in present_paths}
        for attempt in self._attempts():
            with attempt, self._write() as con:
                known = con.execute(
                    "SELECT path FROM files WHERE NOT deleted AND starts_with(path, ?)", [prefix]
                ).fetchall()
                gone = [p for (p,) in known if p not in present]
                if gone:
                    con.execute(
                        "UPDATE files SET deleted = true WHERE path IN (SELECT unnest(?::VARCHAR[]))", [gone]
                    )
        return len(gone)

    # ------------------------------------------------------------------ calls

    def save_call(self, call: CallRecord) -> None:
        """Log one call as soon as it returned (success or error): resume depends on it."""
        self.save_calls([call])

    def save_calls(self, calls: Sequence[CallRecord]) -> None:
        """Several calls in one transaction (call_id is unique: a call is logged once)."""
        if not calls:
            return
        for attempt in self._attempts():
            with attempt, self._write() as con:
                insert_rows_json(con, "calls", [call_values(c) for c in calls])

    def has_run(self, run_id: str) -> bool:
        with self._read() as con:
            return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def paid_by_run(self, run_id: str) -> list[tuple[str, int, int, int, int, float]]:
        """Per document: the run's logged calls, prompt, cached and completion tokens, and cost (a request
        that failed unbilled is logged but not counted)."""
        with self._read() as con:
            rows = con.execute(
                "SELECT doc_id, count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), "
                "sum(cost_usd) FROM calls WHERE run_id = ? AND doc_id IS NOT NULL AND status <> 'error' "
                "GROUP BY doc_id",
                [run_id],
            ).fetchall()
        return [
            (str(d), int(n), int(p or 0), int(c or 0), int(o or 0), float(cost or 0.0))
            for d, n, p, c, o, cost in rows
        ]

    def run_questions(self, run_id: str) -> QueryResult:
        """The questions a run answered, in the order asked (`kimidocs ask` prints them)."""
        return self.query(
            "SELECT question, answer, pages, evidence, cost_usd, calls, prompt_tokens, cached_tokens, error "
            "FROM questions WHERE run_id = ? ORDER BY question_no",
            [run_id],
        )

    def find_run_call(self, run_id: str) -> str | None:
        """The request key of one call run `run_id` finished, or None (has any process of it called?)."""
        with self._read() as con:
            row = con.execute(
                "SELECT request_key FROM calls WHERE run_id = ? AND status = 'ok' LIMIT 1", [run_id]
            ).fetchone()
        return str(row[0]) if row else None

    def find_completed_call(self, request_key: str) -> CallRecord | None:
        """The newest successful call with this request key (a resumed run re-pays nothing)."""
        with self._read() as con:
            row = con.execute(
                f"{select_sql('calls', CALL_COLUMNS)} WHERE request_key = ? AND status = 'ok' "
                "ORDER BY started_at DESC NULLS LAST LIMIT 1",
                [request_key],
            ).fetchone()
        return call_from_row(dict(zip(CALL_COLUMNS, row, strict=True))) if row else None

    # ------------------------------------------------------------------ batches

    def save_batch(self, batch: BatchRow) -> None:
        """Record a batch before the server is asked to create it (`pending`, no batch id yet) or the
        moment it is created: a rerun finds it here (see `set_batch_id`)."""
        now = datetime.now(UTC)
        for attempt in self._attempts():
            with attempt, self._write(f"batches:{batch.input_file_id}") as con:
                con.execute(
                    "INSERT INTO batches (batch_id, run_id, folder, model, input_file_id, round, "
                    "request_keys, status, estimate_usd, created_at, updated_at, done) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false)",
                    [
                        batch.batch_id,
                        batch.run_id,
                        batch.folder,
                        batch.model,
                        batch.input_file_id,
                        batch.round,
                        list(batch.request_keys),
                        batch.status,
                        batch.estimate_usd,
                        now,
                        now,
                    ],
                )

    def set_batch_id(self, input_file_id: str, batch_id: str, status: str) -> None:
        """A pending batch row gets the id (and status) of the batch the server made from its file."""
        for attempt in self._attempts():
            with attempt, self._write(f"batches:{input_file_id}") as con:
                con.execute(
                    "UPDATE batches SET batch_id = ?, status = ?, updated_at = ? WHERE input_file_id = ?",
                    [batch_id, status, datetime.now(UTC), input_file_id],
                )

    def update_batch(self, input_file_id: str, status: str | None = None, *, done: bool = False) -> None:
        """The batch's status as last read (None: unchanged); `done` once its lines are in `calls`."""
        for attempt in self._attempts():
            with attempt, self._write(f"batches:{input_file_id}") as con:
                con.execute(
                    "UPDATE batches SET status = coalesce(?, status), updated_at = ?, done = done OR ? "
                    "WHERE input_file_id = ?",
                    [status, datetime.now(UTC), done, input_file_id],
                )

    def open_batches(self, folder: str, model: str) -> list[BatchRow]:
        """Batches of earlier runs over `folder` whose results were never read, pending ones included
        (oldest first)."""
        with self._read() as con:
            rows = con.execute(
                "SELECT batch_id, run_id, folder, model, input_file_id, round, request_keys, status, "
                "estimate_usd FROM batches WHERE folder = ? AND model = ? AND NOT done ORDER BY created_at",
                [folder, model],
            ).fetchall()
        return [BatchRow(r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6]), r[7], r[8]) for r in rows]

    # ------------------------------------------------------------------ summaries

    def has_summary(self, doc_id: str, profile: str, prompt_version: str, model: str) -> bool:
        """Whether the work key has a finished result; one with unread pages is still to be done."""
        with self._read() as con:
            row = con.execute(
                "SELECT 1 FROM summaries WHERE doc_id = ? AND profile = ? AND prompt_version = ? "
                "AND model = ? AND coalesce(pages_failed, 0) = 0",
                [doc_id, profile, prompt_version, model],
            ).fetchone()
        return row is not None

    def save_summary(self, row: SummaryRow, *, document_status: str | None = None) -> tuple[str, ...]:
        """Replace the result for its natural key; returns the coercion warnings (also stored).

        `document_status` also sets `documents.status` in the same transaction (one commit, ~5 ms
        of fsync, instead of two).
        """
        cols = summary_columns(row)
        names = [name.strip() for name in _SUMMARY_COLUMNS.split(",")]
        params = [cols.values[name] for name in names[:-1]] + [cols.values["raw"]] * 3
        # raw last: kept as JSON when DuckDB can parse it, else stored as a JSON string
        sql = (
            f"INSERT INTO summaries ({_SUMMARY_COLUMNS}) VALUES ({', '.join(['?'] * (len(names) - 1))}, "
            "CASE WHEN json_valid(?) THEN CAST(? AS JSON) ELSE to_json(?) END)"
        )
        for attempt in self._attempts():
            with (
                attempt,
                self._write(
                    f"summaries:{row.doc_id}|{row.profile}|{row.prompt_version}|{row.model}",
                    f"documents:{row.doc_id}",
                ) as con,
            ):
                con.execute(
                    "DELETE FROM summaries WHERE doc_id = ? AND profile = ? AND prompt_version = ? "
                    "AND model = ?",
                    [row.doc_id, row.profile, row.prompt_version, row.model],
                )
                con.execute(sql, params)
                if document_status is not None:
                    con.execute(
                        "UPDATE documents SET status = ?, error_type = NULL, error_message = NULL "
                        "WHERE doc_id = ?",
                        [document_status, row.doc_id],
                    )
        return cols.warnings

    # ------------------------------------------------------------------ questions (kimidocs ask)

    def save_question(self, row: QuestionRow) -> None:
        """Append one answered question to `questions`."""
        for attempt in self._attempts():
            with attempt, self._write() as con:
                con.execute(
                    "INSERT INTO questions (doc_id, question_no, question, answer, pages, evidence, model, "
                    "backend, run_id, created_at, coverage, calls, prompt_tokens, cached_tokens, cost_usd, "
                    "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        row.doc_id,
                        row.question_no,
                        clean_text(row.question),
                        clean_text(row.answer),
                        list(row.pages),
                        clean_text(row.evidence),
                        row.model,
                        row.backend,
                        row.run_id,
                        to_datetime(row.created_at),
                        row.coverage,
                        row.calls,
                        row.prompt_tokens,
                        row.cached_tokens,
                        row.cost_usd,
                        clean_text(row.error),
                    ],
                )

    def questions_asked(self, doc_id: str, run_id: str) -> dict[int, str | None]:
        """The questions run `run_id` has already answered for `doc_id` (number -> error, None when
        answered): a batch round that replays the document asks only the others."""
        with self._read() as con:
            rows = con.execute(
                "SELECT question_no, error FROM questions WHERE doc_id = ? AND run_id = ?", [doc_id, run_id]
            ).fetchall()
        return {int(no): error for no, error in rows}

    # ------------------------------------------------------------------ declared profiles

    def has_task_result(self, doc_id: str, profile: str, task: str, task_version: str, model: str) -> bool:
        """Whether the work key (doc, profile, task, task version, model) has a finished result."""
        with self._read() as con:
            row = con.execute(
                "SELECT 1 FROM task_results WHERE doc_id = ? AND profile = ? AND task = ? "
                "AND task_version = ? AND model = ? AND coalesce(pages_failed, 0) = 0",
                [doc_id, profile, task, task_version, model],
            ).fetchone()
        return row is not None

    def save_task_result(self, row: TaskResultRow) -> tuple[str, ...]:
        """Replace the result for its natural key; returns the coercion warnings (also stored)."""
        cols = task_columns(row)
        names = [name.strip() for name in _TASK_COLUMNS.split(",")]
        params = [cols.values[name] for name in names[:-1]] + [cols.values["raw"]] * 3
        sql = (
            f"INSERT INTO task_results ({_TASK_COLUMNS}) VALUES ({', '.join(['?'] * (len(names) - 1))}, "
            "CASE WHEN json_valid(?) THEN CAST(? AS JSON) ELSE to_json(?) END)"
        )
        for attempt in self._attempts():
            with (
                attempt,
                self._write(
                    f"task_results:{row.doc_id}|{row.profile}|{row.spec.name}|{row.task_version}|{row.model}"
                ) as con,
            ):
                con.execute(
                    "DELETE FROM task_results WHERE doc_id = ? AND profile = ? AND task = ? "
                    "AND task_version = ? AND model = ?",
                    [row.doc_id, row.profile, row.spec.name, row.task_version, row.model],
                )
                con.execute(sql, params)
        return cols.warnings

    def refresh_profile_views(self, views: ProfileViews, *, force: bool = False) -> bool:
        """(Re)create a profile's typed views when its version changed (or `force`); True when rebuilt.

        The views recorded for the profile's previous version are dropped first (a removed task
        leaves no stale view); `profile_views` records what exists now.
        """
        for attempt in self._attempts():
            with attempt, self._write(f"profile_views:{views.profile}") as con:
                current = con.execute(
                    "SELECT profile_version, views FROM profile_views WHERE profile = ?", [views.profile]
                ).fetchone()
                existing = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
                up_to_date = current is not None and current[0] == views.version
                if up_to_date and not force and set(views.names) <= existing:
                    return False
                for name in reversed(current[1] if current else []):
                    con.execute(f'DROP VIEW IF EXISTS "{name}"')
                for view in views.views:
                    con.execute(view.sql)
                con.execute("DELETE FROM profile_views WHERE profile = ?", [views.profile])
                con.execute(
                    "INSERT INTO profile_views VALUES (?, ?, ?, ?)",
                    [views.profile, views.version, list(views.names), utcnow()],
                )
        return True

    # ------------------------------------------------------------------ reports

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """What one run did, for the run report and the Prefect artifact."""
        with self._read() as con:
            run = _one_dict(con, "SELECT * FROM run_costs WHERE run_id = ?", [run_id])
            if run is None:
                raise KeyError(f"{self.path}: no run {run_id!r}")
            cache = _all_dicts(
                con,
                "SELECT model, calls, prompt_tokens, cached_tokens, cached_share, cost_usd, saved_usd "
                "FROM cache_efficiency WHERE run_id = ? ORDER BY model",
                [run_id],
            )
            failures = _all_dicts(
                con,
                "SELECT path, doc_id, stage, error_type, message, failed_at FROM failures "
                "WHERE run_id = ? ORDER BY failed_at",
                [run_id],
            )
            by_stage = _all_dicts(
                con,
                "SELECT stage, count(*) AS calls, sum(cost_usd) AS cost_usd FROM calls WHERE run_id = ? "
                "GROUP BY stage ORDER BY stage",
                [run_id],
            )
            summaries = con.execute(
                "SELECT count(*), coalesce(sum(len(coercion_warnings)), 0), "
                "coalesce(avg(coverage), 0), count(*) FILTER (WHERE coverage < 1) "
                "FROM summaries WHERE run_id = ?",
                [run_id],
            ).fetchone()
        assert summaries is not None
        run.update(
            saved_usd=sum(c["saved_usd"] or 0.0 for c in cache),
            cache_by_model=cache,
            calls_by_stage=by_stage,
            failures=failures,
            summaries_written=summaries[0],
            coercion_warnings=int(summaries[1]),
            mean_coverage=float(summaries[2]),
            partial_coverage=summaries[3],
            emulated=run.get("backend") == "emulator",
        )
        return run

    # ------------------------------------------------------------------ full-text search

    def search_index(self) -> SearchIndex:
        """This machine's full-text index file of this store (search_index.py): runs never build it;
        `search` brings it up to date first."""
        if self.lake is not None:
            name = self.lake.location.key
        else:
            name = f"{self.path.stem}-{hashlib.sha256(str(self.path).encode()).hexdigest()[:16]}"
        return SearchIndex((self.search_cache or default_cache_dir()) / f"{name}.duckdb")

    def refresh_search_index(self) -> Refreshed:
        """Bring the local full-text index up to date with the stored pages, copying only the pages of
        documents stored or changed since (`search` does this itself): pages indexed, pages copied now."""
        return self._refreshed(self.search_index())

    def search(self, terms: str, limit: int = 10) -> list[SearchHit]:
        """Pages ranked by BM25 for `terms`, from the local index, brought up to date first. Works on a
        read-only Store: the index is a file of its own, never the store."""
        index = self.search_index()
        paths = self._refreshed(index).paths
        try:
            rows = index.search(terms, limit)
        except duckdb.Error as exc:
            raise SearchIndexUnusable(index.file, str(exc)) from exc
        return [
            SearchHit(doc_id, paths.get(doc_id), page_no, float(score), snippet(text, terms))
            for doc_id, page_no, score, text in rows
        ]

    def _refreshed(self, index: SearchIndex) -> Refreshed:
        try:
            return index.refresh(self._read)
        except StoreError:
            raise
        except (OSError, duckdb.Error) as exc:
            raise SearchIndexUnusable(index.file, str(exc).strip().splitlines()[0]) from exc

    # ------------------------------------------------------------------ analysts

    def query(self, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
        """Run one SQL statement and fetch everything (the engine of `kimidocs query`)."""
        with self._read() as con:
            try:
                cur = con.execute(sql, params or [])
                if cur.description is None:
                    return QueryResult((), (), ())
                columns = tuple(d[0] for d in cur.description)
                types = tuple(str(d[1]) for d in cur.description)
                rows = tuple(cur.fetchall())
            except duckdb.Error as exc:
                raise QueryError(self.path, str(exc)) from exc
        return QueryResult(columns, types, rows)

    def relations(self) -> list[tuple[str, str]]:
        """(name, 'table' | 'view') of everything analysts can query, tables first."""
        with self._read() as con:
            return _relations(con)

    def export(self, directory: str | Path, fmt: str = "parquet") -> list[Path]:
        """Every table and view to `directory/<name>.<fmt>` (parquet or csv); returns the files."""
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"export format must be parquet or csv, not {fmt!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
        written = []
        with self._read() as con:
            for name, _kind in _relations(con):
                target = out / f"{name}.{fmt}"
                quoted = str(target).replace("'", "''")
                con.execute(f"COPY (SELECT * FROM \"{name}\") TO '{quoted}' ({options})")
                written.append(target)
        return written


# ---------------------------------------------------------------------- helpers


def _upsert_file(
    con: duckdb.DuckDBPyConnection,
    path: str,
    doc_id: str | None,
    size: int | None,
    mtime: datetime | None,
    now: datetime,
) -> None:
    path = shown(path)
    row = con.execute("SELECT min(first_seen) FROM files WHERE path = ?", [path]).fetchone()
    first_seen = row[0] if row and row[0] is not None else now
    con.execute("DELETE FROM files WHERE path = ?", [path])
    con.execute(_INSERT_FILE, [path, doc_id, size, to_datetime(mtime), first_seen, now])


def _page_rows(doc: Document, page_tokens: Sequence[int] | None) -> list[dict[str, Any]]:
    tokens = list(page_tokens) if page_tokens is not None else [None] * len(doc.pages)
    return [
        {
            "doc_id": doc.sha256,
            "page_no": p.number,
            "page_id": f"{doc.sha256}:{p.number}",
            "label": clean_text(p.label),
            "text": clean_text(p.text),
            "chars": p.chars,
            "tokens_est": n,
            "image_count": p.image_count,
        }
        for p, n in zip(doc.pages, tokens, strict=True)
    ]


def _one_dict(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> dict[str, Any] | None:
    rows = _all_dicts(con, sql, params)
    return rows[0] if rows else None


def _all_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_name, 'table' FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND database_name = current_database() "
        "UNION ALL SELECT view_name, 'view' FROM duckdb_views() WHERE schema_name = 'main' "
        "AND database_name = current_database() AND NOT internal ORDER BY 2, 1"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


_WORD = re.compile(r"\w+", re.UNICODE)


def snippet(text: str, terms: str, width: int = SNIPPET_CHARS) -> str:
    """A window of `text` around the first query word it contains (case-insensitive)."""
    lower = text.lower()
    positions = [lower.find(w.lower()) for w in _WORD.findall(terms)]
    hits = [p for p in positions if p >= 0]
    start = max(min(hits) - width // 3, 0) if hits else 0
    piece = " ".join(text[start : start + width].split())
    return ("…" if start > 0 else "") + piece + ("…" if start + width < len(text) else "")
