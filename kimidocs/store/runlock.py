"""One analysing run per database file: an exclusive lock on `<db>.lock`, held for the whole run.

Two runs on one database used to read "no summary yet" for the same documents and pay for them
twice (resume by request key only sees calls that already *returned*). Claims per document would
keep both runs busy, but need leases, expiry and clean-up after crashes; a run-wide lock is simpler
and just as correct: the second run waits, then finds the first run's results and pays nothing
for them. The lock is `flock` on a side file, so the kernel drops it when its process dies
(SIGKILL, OOM): there is no stale lock to clean. Readers (`kimidocs query`, analysts) never take it.

The file also holds who owns it (host, pid, run id), so the one who waits can say whom for.

A lake is shared by machines, so a local file cannot carry its lock: there `RunLock` holds a
PostgreSQL advisory lock in the lake's catalog database instead (pglocks.AdvisoryRunLock), with the
same semantics (waits, says for whom, dropped by the server when the holder's connection dies).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from kimidocs.store.errors import DatabaseUnusable
from kimidocs.store.location import LakeLocation, is_lake
from kimidocs.store.pglocks import AdvisoryRunLock

__all__ = ["FileRunLock", "RunLock", "lock_path"]


def lock_path(db: Path) -> Path:
    """The side file next to the database that carries the lock."""
    return db.with_name(db.name + ".lock")


class RunLock:
    """The run lock of one database (file or lake): `acquire` waits (telling `on_wait`), `release` is
    idempotent."""

    def __init__(self, db: str | Path) -> None:
        self._impl: FileRunLock | AdvisoryRunLock
        if is_lake(db):
            location = LakeLocation.parse(db)
            self._impl = AdvisoryRunLock(location.conninfo, str(location))
        else:
            self._impl = FileRunLock(db)

    @property
    def held(self) -> bool:
        return self._impl.held

    def acquire(self, owner: str, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock (blocking while another run holds it), recording `owner` for whoever waits."""
        self._impl.acquire(owner, on_wait)

    def release(self) -> None:
        self._impl.release()


class FileRunLock:
    """The run lock of one database file: `flock` on `<db>.lock`."""

    def __init__(self, db: str | Path) -> None:
        self.path = lock_path(Path(db))
        self._fd: int | None = None
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, owner: str, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock (blocking while another run holds it) and record `owner` in the file."""
        with self._guard:
            if self._fd is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                db = self.path.with_name(self.path.name.removesuffix(".lock"))
                raise DatabaseUnusable(db, f"cannot create its run lock {self.path}: {exc.strerror}") from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait(self._waiting_message(fd))
                    fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel wakes us when the holder releases or dies
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{owner} host={socket.gethostname()} pid={os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd

    def release(self) -> None:
        """Let the next run in (closing the descriptor drops the flock)."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _waiting_message(self, fd: int) -> str:
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
        db = self.path.with_name(self.path.name.removesuffix(".lock"))
        return f"another kimidocs run is writing to {db} ({holder}); waiting for it to finish"

    def __del__(self) -> None:
        self.release()
