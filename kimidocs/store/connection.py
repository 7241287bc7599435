"""Short DuckDB connections that wait politely for the file.

DuckDB lets one process hold a database file at a time (a writer, or readers, never both
across processes). So nobody here keeps the file open: every transaction opens a connection,
does its work and closes it, and an open that hits another process's lock is retried with
jittered backoff until `timeout_s`, then becomes `DatabaseLocked`.

Inside one process DuckDB shares one database instance between connections with the same
configuration, but concurrent writers of the same rows hit transaction conflicts, and a
read-only connection cannot coexist with a read-write one. A process-wide lock per file
serialises writers (and read-only opens) of this process.

Fairness: a writer that commits back to back would leave a reader in another process only
microseconds to get in. A waiting reader therefore drops a marker file `<db>.wait-<pid>-<n>`
next to the database; a writer that sees a fresh marker pauses `READER_GRACE_S` before its
next open. The marker is removed as soon as the reader is in.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path

import duckdb
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from kimidocs.store.errors import DatabaseLocked, DatabaseMissing

# Our connections never try to download extensions (there is no route to DuckDB's server here).
CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
READER_GRACE_S = 0.15  # how long a writer steps aside for a waiting reader
MARKER_FRESH_S = 3.0  # a marker older than this belongs to a reader that died
_POLL_MAX_S = 0.05  # longest pause between two open attempts

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


@cache
def fts_extension_path() -> Path:
    """The fts extension shipped by the `duckdb-extension-fts` wheel (DuckDB's download is unreachable)."""
    import duckdb_extension_fts

    root = Path(duckdb_extension_fts.__file__).parent
    found = sorted(root.rglob(f"v{duckdb.__version__}/fts.duckdb_extension")) or sorted(
        root.rglob("fts.duckdb_extension")
    )
    if not found:
        raise FileNotFoundError(f"no fts.duckdb_extension under {root} (pip install duckdb-extension-fts)")
    return found[0]


def load_fts(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"LOAD '{fts_extension_path().as_posix()}'")


def _readers_waiting(path: Path) -> bool:
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


def _open(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    marker = _WaitMarker(path) if read_only else None
    if not read_only and _readers_waiting(path):
        time.sleep(READER_GRACE_S)

    def attempt() -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=CONFIG)
        except duckdb.Error as exc:
            if marker is not None and is_lock_conflict(exc):
                marker.touch()
            raise

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_random_exponential(multiplier=0.005, max=_POLL_MAX_S),
        retry=retry_if_exception(is_lock_conflict),
        reraise=False,
    )
    started = time.monotonic()
    try:
        return retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise DatabaseLocked(path, time.monotonic() - started, str(last)) from last
    finally:
        if marker is not None:
            marker.remove()


@contextmanager
def connect(
    path: Path, *, read_only: bool, timeout_s: float, exclusive: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection held only for the `with` block.

    `exclusive` takes the process-wide lock for the whole block: always for writes and for
    read-only opens; a read-write Store's reads skip it (they share the writer's instance).
    """
    if read_only and not path.exists():
        raise DatabaseMissing(path)
    with path_lock(path) if exclusive else nullcontext():
        con = _open(path, read_only, timeout_s)
        try:
            yield con
        finally:
            con.close()


@contextmanager
def transaction(path: Path, *, timeout_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on a fresh connection: committed on success, rolled back on error."""
    with connect(path, read_only=False, timeout_s=timeout_s) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
