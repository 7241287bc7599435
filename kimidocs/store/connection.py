"""DuckDB connections that hold the file only briefly and wait politely for it.

DuckDB lets one process hold a database file at a time (a writer, or readers, never both
across processes). So nobody here keeps the file open for long:

- Read-only opens (`kimidocs query`, analysts' tools) open, query and close.
- A writing process keeps one connection per file as a short *lease*: write transactions that
  follow each other closely reuse it (opening a DuckDB file and checkpointing it on close costs
  ~15-35 ms, a small insert ~1 ms), and a background closer releases the file after
  `IDLE_S` without writes, after `MAX_HOLD_S` in any case, or as soon as someone waits.
- An open that hits another process's lock is retried with jittered backoff until `timeout_s`,
  then becomes `DatabaseLocked`.

Waiting is made visible: a process whose open failed on the lock drops a marker file
`<db>.wait-<pid>-<n>` next to the database (removed once it is in). A lease holder that sees a
fresh marker closes at its next check, and a writer that sees one pauses `READER_GRACE_S` before
opening again, so a reader is not starved by a busy writer.

Inside one process DuckDB shares one database instance between connections of the same
configuration, but concurrent writers of the same rows hit transaction conflicts, and a
read-only connection cannot coexist with a read-write one. A process-wide lock per file
serialises every use of the lease.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from kimidocs.store.errors import DatabaseLocked, DatabaseMissing, DatabaseUnusable
from kimidocs.store.extensions import extension_path, load_extension

# Our connections never try to download extensions (there is no route to DuckDB's server here).
CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
READER_GRACE_S = 0.06  # how long a writer steps aside for a waiting process (> _POLL_MAX_S)
MARKER_FRESH_S = 3.0  # a marker older than this belongs to a process that died
IDLE_S = 0.2  # a lease is released after this long without use
MAX_HOLD_S = 2.0  # ... and after this long in any case
CHECK_S = 0.02  # how often the closer looks
_POLL_MAX_S = 0.02  # longest pause between two open attempts
NOTICE_AFTER_S = 0.5  # a wait longer than this is announced (`on_wait`): short turns pass unsaid


_locks: dict[Path, threading.RLock] = {}
_locks_guard = threading.Lock()
_marker_seq = itertools.count()


def path_lock(path: Path) -> threading.RLock:
    """The process-wide lock for one database file."""
    with _locks_guard:
        return _locks.setdefault(path, threading.RLock())


def is_lock_conflict(exc: BaseException) -> bool:
    """Another process holds the file, or this process holds it with another configuration."""
    text = str(exc)
    return (isinstance(exc, duckdb.IOException) and "Could not set lock" in text) or (
        isinstance(exc, duckdb.ConnectionException) and "different configuration" in text
    )


def fts_extension_path() -> Path:
    """The fts extension shipped by the `duckdb-extension-fts` wheel (DuckDB's download is unreachable)."""
    return extension_path("fts")


def load_fts(con: duckdb.DuckDBPyConnection) -> None:
    load_extension(con, "fts")


def _others_waiting(path: Path) -> bool:
    now = time.time()
    for marker in path.parent.glob(f"{path.name}.wait-*"):
        try:
            if now - marker.stat().st_mtime < MARKER_FRESH_S:
                return True
        except FileNotFoundError:
            continue
    return False


class _WaitMarker:
    """A reader's 'I am waiting' flag, refreshed on each failed attempt."""

    def __init__(self, path: Path) -> None:
        self.file = path.with_name(f"{path.name}.wait-{os.getpid()}-{next(_marker_seq)}")
        self.placed = False

    def touch(self) -> None:
        try:
            self.file.touch()
            self.placed = True
        except OSError:
            pass  # a read-only directory: we just lose the fairness hint

    def remove(self) -> None:
        if self.placed:
            self.file.unlink(missing_ok=True)


OnWait = Callable[[float], None]  # told once, with the seconds waited so far, when a wait gets long


def _open(
    path: Path, read_only: bool, timeout_s: float, on_wait: OnWait | None = None
) -> duckdb.DuckDBPyConnection:
    marker = _WaitMarker(path)
    if not read_only and _others_waiting(path):
        time.sleep(READER_GRACE_S)
    started = time.monotonic()
    told = on_wait is None

    def attempt() -> duckdb.DuckDBPyConnection:
        nonlocal told
        try:
            return duckdb.connect(str(path), read_only=read_only, config=CONFIG)
        except duckdb.Error as exc:
            if is_lock_conflict(exc):
                marker.touch()
                waited = time.monotonic() - started
                if not told and waited >= NOTICE_AFTER_S:
                    told = True
                    on_wait(waited)  # type: ignore[misc]
                raise
            raise DatabaseUnusable(path, _first_line(str(exc))) from exc

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_random_exponential(multiplier=0.005, max=_POLL_MAX_S),
        retry=retry_if_exception(is_lock_conflict),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise DatabaseLocked(path, time.monotonic() - started, str(last)) from last
    finally:
        marker.remove()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown DuckDB error"


@contextmanager
def connect(
    path: Path, *, timeout_s: float, on_wait: OnWait | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection held only for the `with` block.

    It does not take the process-wide lock: while this process's own write lease is open the
    open fails on the configuration clash, drops a wait marker, and the lease's closer (which
    needs that lock) releases the file within `CHECK_S`.
    """
    if not path.exists():
        raise DatabaseMissing(path)
    con = _open(path, True, timeout_s, on_wait)
    try:
        yield con
    finally:
        con.close()


class _Lease:
    """This process's read-write connection to one file, released soon after its last use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con: duckdb.DuckDBPyConnection | None = None
        self.opened = 0.0
        self.last_used = 0.0

    def acquire(self, timeout_s: float) -> duckdb.DuckDBPyConnection:
        """Under the path lock: the open connection, opening it (and starting its closer) if needed."""
        if self.con is None:
            self.con = _open(self.path, False, timeout_s)
            self.opened = time.monotonic()
            threading.Thread(target=self._closer, name=f"duckdb-lease-{self.path.name}", daemon=True).start()
        return self.con

    def release(self, *, broken: bool = False) -> None:
        self.last_used = time.monotonic()
        if broken or MAX_HOLD_S <= 0:
            self.close()

    def close(self) -> None:
        if self.con is not None:
            con, self.con = self.con, None
            con.close()

    def _closer(self) -> None:
        while True:
            time.sleep(CHECK_S)
            with path_lock(self.path):
                if self.con is None:
                    return
                now = time.monotonic()
                if (
                    now - self.last_used >= IDLE_S
                    or now - self.opened >= MAX_HOLD_S
                    or _others_waiting(self.path)
                ):
                    self.close()
                    return


_leases: dict[Path, _Lease] = {}


def _lease(path: Path) -> _Lease:
    with _locks_guard:
        return _leases.setdefault(path, _Lease(path))


@contextmanager
def held(path: Path, *, timeout_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """The process's read-write connection for the `with` block (no transaction of its own)."""
    lease = _lease(path)
    with path_lock(path):
        con = lease.acquire(timeout_s)
        broken = True
        try:
            yield con
            broken = False
        finally:
            lease.release(broken=broken)


@contextmanager
def transaction(path: Path, *, timeout_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on the lease: committed on success, rolled back on error."""
    with held(path, timeout_s=timeout_s) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def release(path: Path) -> None:
    """Close this process's lease on `path` now (end of a run, tests)."""
    with path_lock(path):
        _lease(path).close()


def _forget_after_fork() -> None:
    """A forked child must not touch the parent's connections: start with no leases and fresh locks."""
    global _locks_guard
    _leases.clear()
    _locks.clear()
    _locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close_all() -> None:
    for lease in list(_leases.values()):
        with path_lock(lease.path):
            lease.close()
