"""The DuckLake engine of the store: one attached lake per Store, writes serialised per key, retried whole.

A lake is written by many processes on many machines at once. Three rules keep that correct:

- Every write transaction holds the PostgreSQL advisory lock of each natural key it replaces
  (pglocks.py), from before BEGIN until after COMMIT: delete+insert of one key is never concurrent,
  which DuckLake 1.5.5 cannot detect for a new key (duckdb/ducklake#1393).
- Commits race for the next snapshot id. DuckLake retries a commit whose changes do not conflict
  (`ducklake_max_retry_count`, kept short here); a real conflict (conflicts are per table: deletes from
  one table by two writers of *different* keys) is raised, and the store re-runs the WHOLE transaction
  (tenacity, `attempts`), which always converges: the next try reads the new snapshot.
- One DuckDB connection per Store, used by one thread at a time (a thread lock), so the advisory
  locks of one session are never shared by two threads (they are re-entrant per session).

Reads run in a transaction, so every method reads one snapshot, whatever commits meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

import duckdb
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from kimidocs.store.connection import CONFIG
from kimidocs.store.errors import DatabaseMissing, DatabaseUnusable
from kimidocs.store.extensions import load_extension
from kimidocs.store.location import LakeLocation, redact
from kimidocs.store.pglocks import SCHEMA_KEY, KeyLocks

ALIAS = "lake"
#: DuckLake's own commit retries (snapshot-id races without a logical conflict): short waits, since a
#: real conflict is retried by us with the whole transaction.
DUCKLAKE_SETTINGS = {
    "ducklake_max_retry_count": 20,
    "ducklake_retry_wait_ms": 10,
    "ducklake_retry_backoff": 1.3,
}
MAX_ATTEMPTS = 60  # whole-transaction tries; measured mean 1.3 with 3 writers
MAX_RETRY_S = 120.0


def is_conflict(exc: BaseException) -> bool:
    """A commit that lost to another writer's (retryable by running the transaction again)."""
    text = str(exc)
    return isinstance(exc, duckdb.TransactionException) or (
        isinstance(exc, duckdb.Error) and ("conflict" in text.lower() or "Failed to commit" in text)
    )


class LakeEngine:
    """A DuckLake attached as `lake` in a private in-memory DuckDB, opened on first use."""

    def __init__(self, location: LakeLocation, *, read_only: bool) -> None:
        self.location = location
        self.read_only = read_only
        self.conflicts = 0  # whole-transaction retries so far (benchmarks, tests)
        self.commits = 0
        self._guard = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._locks = KeyLocks(location.conninfo)

    # ------------------------------------------------------------------ connection

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None or self._pid != os.getpid():
            self._con = self._open()
            self._pid = os.getpid()
        return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config=CONFIG)
        try:
            load_extension(con, "ducklake")
            load_extension(con, "postgres_scanner")
            options = ["READ_ONLY"] if self.read_only else []
            if self.location.data_path and not self.read_only:
                options.append(f"DATA_PATH '{_quote(self.location.data_path)}'")
            suffix = f" ({', '.join(options)})" if options else ""
            attach = f"ATTACH '{_quote(self.location.attach_string)}' AS {ALIAS}{suffix}"
            if self.read_only:
                con.execute(attach)
            else:  # the first ATTACH creates the catalog's tables: two machines must not both do it
                with self._locks.holding([SCHEMA_KEY]):
                    con.execute(attach)
            con.execute(f"USE {ALIAS}")
            for name, value in DUCKLAKE_SETTINGS.items():
                con.execute(f"SET {name} = {value}")
        except duckdb.Error as exc:
            con.close()
            detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            if self.read_only and "does not exist" in detail.lower():
                raise DatabaseMissing(str(self.location)) from None
            if "data_path is not set" in detail:
                detail += " (KIMIDOCS_LAKE_DATA_PATH: a folder or s3:// path every machine reaches)"
            raise DatabaseUnusable(str(self.location), detail) from None
        return con

    def close(self) -> None:
        with self._guard:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con = None
            self._locks.close()

    # ------------------------------------------------------------------ transactions

    def attempts(self) -> Retrying:
        """Tries of one whole write transaction: `for attempt in engine.attempts(): with attempt, ...`."""

        def counted(state: RetryCallState) -> None:
            self.conflicts += 1

        return Retrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(MAX_ATTEMPTS) | stop_after_delay(MAX_RETRY_S),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            before_sleep=counted,
            reraise=True,
        )

    @contextmanager
    def transaction(self, keys: Iterable[str]) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction holding the advisory lock of every key in `keys`."""
        if self.read_only:
            raise PermissionError(f"{self.location}: this Store was opened read-only")
        with self._guard:
            con = self._connection()
            with self._locks.holding(keys), _committed(con):
                yield con
            self.commits += 1

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction for reads: one snapshot for the whole block."""
        with self._guard:
            con = self._connection()
            with _committed(con):
                yield con

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for the block, no transaction (ATTACH / DETACH of a local file)."""
        with self._guard:
            yield self._connection()

    @contextmanager
    def schema(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection, no transaction, with the schema lock: migrations of one lake take turns."""
        with self.session() as con, self._locks.holding([SCHEMA_KEY]):
            yield con

    def snapshot_id(self) -> int:
        with self.read() as con:
            row = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()
        return int(row[0]) if row else 0


@contextmanager
def _committed(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN, then COMMIT when the block ends, or roll back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):  # a failed COMMIT has ended the transaction already
        con.execute("ROLLBACK")


def _quote(text: str) -> str:
    return text.replace("'", "''")
