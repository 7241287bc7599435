"""PostgreSQL advisory locks in the lake's catalog database: per-key write locks and the run lock.

Why: DuckLake has no primary keys, and a delete+insert "upsert" of a key that does not exist yet is
not checked for conflicts at all (duckdb/ducklake#1393, fixed after the 1.5.5 wheel): two writers of
the same new key both commit, and the key is stored twice, silently. So writers of one key take turns:
each write transaction holds a session-level `pg_advisory_lock` per natural key it replaces, from
before BEGIN until after COMMIT. The next writer of that key then starts after the commit and its
DELETE sees the row. Writers of *different* keys are not serialised here; DuckLake detects their
(table-level) conflicts and the store retries the whole transaction.

Session-level locks belong to one PostgreSQL connection and die with it: a process killed mid-write
leaves no lock behind (the server ends its session when the socket closes).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

import psycopg

from kimidocs.store.errors import DatabaseUnusable
from kimidocs.store.location import redact

RUN_LOCK_KEY = "run-lock"
SCHEMA_KEY = "schema"
_APP = "kimidocs"


def lock_id(key: str) -> int:
    """A stable signed 64-bit id for `key` (pg_advisory_lock takes a bigint)."""
    digest = hashlib.blake2b(f"kimidocs:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def connect(conninfo: str, application_name: str) -> psycopg.Connection:
    """An autocommit connection to the catalog database (no password in the error we raise)."""
    try:
        return psycopg.connect(conninfo, autocommit=True, application_name=application_name[:63])
    except psycopg.Error as exc:
        raise DatabaseUnusable(redact("ducklake:postgres:" + conninfo), redact(str(exc).strip())) from exc


class KeyLocks:
    """Advisory locks on natural keys, held by one catalog connection of this Store.

    Advisory locks are re-entrant within a session, so threads of one process sharing this object must
    not overlap: the Store's engine holds its own thread lock around every use.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._con: psycopg.Connection | None = None
        self._pid = 0

    def _connection(self) -> psycopg.Connection:
        if self._con is None or self._pid != os.getpid() or self._con.closed:
            self._con = connect(self.conninfo, f"{_APP} writer pid={os.getpid()}")
            self._pid = os.getpid()
        return self._con

    @contextmanager
    def holding(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the lock of every key (taken in id order, so two writers never deadlock)."""
        ids = sorted({lock_id(k) for k in keys})
        if not ids:
            yield
            return
        con = self._connection()
        taken = []
        try:
            for ident in ids:
                con.execute("SELECT pg_advisory_lock(%s)", [ident])
                taken.append(ident)
        except psycopg.Error as exc:
            self._lost(exc)
        try:
            yield
        finally:
            try:
                for ident in reversed(taken):
                    con.execute("SELECT pg_advisory_unlock(%s)", [ident])
            except psycopg.Error:  # a dead session holds no lock any more: reconnect next time
                self.close()

    def _lost(self, exc: psycopg.Error) -> None:
        """The catalog connection failed: drop it (its locks die with it) and say so as a StoreError."""
        self.close()
        raise DatabaseUnusable(
            redact("ducklake:postgres:" + self.conninfo), redact(str(exc).strip())
        ) from exc

    def close(self) -> None:
        if self._con is not None and self._pid == os.getpid():
            with suppress(psycopg.Error):
                self._con.close()
        self._con = None


class AdvisoryRunLock:
    """The run lock of a lake: one session-level advisory lock, held by the run's process for the run.

    Same semantics as the flock of a DuckDB file: the second run waits, and the lock disappears with the
    holder's connection (a killed process leaves none). Who holds it is read from the holder's
    `application_name` in pg_stat_activity.
    """

    def __init__(self, conninfo: str, shown: str) -> None:
        self.conninfo = conninfo
        self.shown = shown
        self._con: psycopg.Connection | None = None
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._con is not None

    def acquire(self, owner: str, on_wait: Callable[[str], None] | None = None) -> None:
        with self._guard:
            if self._con is not None:
                return
            con = connect(self.conninfo, f"{_APP} waiting for the run lock pid={os.getpid()}")
            try:
                ident = lock_id(RUN_LOCK_KEY)
                row = con.execute("SELECT pg_try_advisory_lock(%s)", [ident]).fetchone()
                if not (row and row[0]):
                    if on_wait is not None:
                        on_wait(self._waiting_message(con))
                    con.execute("SELECT pg_advisory_lock(%s)", [ident])  # the server wakes us
                holder = f"{_APP} run lock {owner} host={socket.gethostname()} pid={os.getpid()}"
                con.execute("SELECT set_config('application_name', %s, false)", [holder[:63]])
            except BaseException:
                con.close()
                raise
            self._con = con

    def release(self) -> None:
        with self._guard:
            con, self._con = self._con, None
        if con is not None:
            con.close()  # ending the session drops its advisory locks

    def _waiting_message(self, con: psycopg.Connection) -> str:
        row = con.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s AND pid <> pg_backend_pid() LIMIT 1",
            [f"{_APP} run lock %"],
        ).fetchone()
        holder = row[0].removeprefix(f"{_APP} run lock ") if row else "another process"
        return f"another kimidocs run is writing to {self.shown} ({holder}); waiting for it to finish"

    def __del__(self) -> None:
        self.release()
