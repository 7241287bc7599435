"""Extraction in worker processes: a timeout that really stops a stuck parser, and all cores
for a folder.

A pure-Python parser stuck in a pathological file cannot be interrupted from another thread,
so `extract(..., limits=Limits(timeout_s=N))` sends the file to a worker process and kills
that process when the time is up. Workers are kept and reused (a new interpreter per file
would pay the start-up and the imports every time); a worker is replaced after a kill, a
crash, or `MAX_JOBS_PER_WORKER` files (pypdf caches grow).

Workers are plain `python -m extractors.isolation` subprocesses talking pickles over two
pipes, not `multiprocessing` children: 'spawn'/'forkserver' re-run the caller's main module
in the child (an unguarded script then recurses), and 'fork' copies a multi-threaded parent
(Prefect, thread pools) with its locks held.

A worker dies with its parent, even in the middle of a file: a third pipe (the lifeline) is
never written, and a thread in the worker exits the process when it reads end-of-file, which
the kernel delivers when the parent is gone however it ended. PR_SET_PDEATHSIG would not do:
it fires when the *thread* that started the worker ends, and workers started by a pool thread
outlive that thread by design.

Memory: all workers of this process share one budget, `limits.memory_budget` (address space,
RLIMIT_AS, which bounds resident memory too). At most `limits.workers(MAX_WORKERS)` extractions run
at once, and each request sets its worker's limit to that share of the budget, so a file that needs
more ends as TooLarge (and the worker, whose heap may be left in any state, is replaced), and the
workers together never hold more than the budget, however many cores the machine has. Idle workers
count: live workers (busy and idle) never outnumber the workers allowed.

    run_isolated(path, limits, keep_images) -> Document   raises ExtractionError / ExtractionTimeout
    extract_many(paths, ...) -> (path, Document | ExtractionError), in input order
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from extractors import errors
from extractors.document import Document
from extractors.errors import CorruptDocument, ExtractionError, ExtractionTimeout, TooLarge
from extractors.limits import GiB, Limits, MiB

Progress = Callable[[int, int], None]
FileProgress = Callable[[str, int, int], None]  # (path, pages done, pages total)

MAX_JOBS_PER_WORKER = 200
# More workers than cores cannot extract faster, and every worker beyond the idle cap is killed
# on release and restarted (~0.2 s CPU) on the next file: one cap for both keeps them all warm.
# The memory budget may allow fewer (`Limits.workers`).
MAX_WORKERS = max(2, os.cpu_count() or 2)
STARTUP_TIMEOUT_S = 60.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IsolationUnavailable(RuntimeError):
    """The worker process could not start: a problem of the environment, not of any file."""


PROGRESS_EVERY_S = 0.2  # a worker reports finished pages at most this often (and always the last one)


def _serve(inbox: Connection, outbox: Connection) -> None:
    """Worker loop: (path, limits, keep_images, memory cap) in; ("progress", done, total) while pages
    finish, then ("ok", Document), ("err", type, path, reason) or ("oom", path, reason) out."""
    import time

    from extractors import extract_here

    outbox.send(("ready",))
    while True:
        try:
            path, limits, keep_images, cap = inbox.recv()
        except (EOFError, OSError):  # the parent went away
            return
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done == total or now - last >= PROGRESS_EVERY_S:
                last = now
                outbox.send(("progress", done, total))

        try:
            _cap_memory(cap)
            outbox.send(
                ("ok", extract_here(path, limits=limits, keep_images=keep_images, on_progress=progress))
            )
        except ExtractionError as exc:
            # Sent as fields: ExtractionError's (path, reason) constructor does not survive pickling.
            outbox.send(("err", exc.error_type, exc.path, exc.reason))
        except MemoryError:
            hint = f"; raise {limits.memory_hint} to allow more" if limits.memory_hint else ""
            outbox.send(("oom", path, f"needs more memory than the {_size(cap)} cap per extraction{hint}"))


def _cap_memory(limit: int | None) -> None:
    """Set this process's soft RLIMIT_AS (None: back to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = hard if limit is None or (hard != resource.RLIM_INFINITY and limit > hard) else limit
    if want != soft:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def _die_with_parent(lifeline: int) -> None:
    """Exit at once when the parent is gone: the lifeline's write end closes and read() returns b""."""

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


class _Worker:
    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        lifeline_r, self.lifeline = os.pipe()  # never written; closes when this process ends
        child_fds = (to_child_r, from_child_w, lifeline_r)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "extractors.isolation", *map(str, child_fds)],
                pass_fds=child_fds,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            os.close(self.lifeline)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        self.send = Connection(to_child_w, readable=False)
        self.recv = Connection(from_child_r, writable=False)
        self.jobs = 0
        self.progress = [0, 0]  # [pages done, pages total] of the current request, as last reported
        try:
            ready = self.recv.poll(STARTUP_TIMEOUT_S) and self.recv.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise IsolationUnavailable(f"extraction worker did not start (exit code {self.proc.returncode})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(
        self, request: tuple[Any, ...], stall_s: float | None, on_progress: Progress | None = None
    ) -> tuple[Any, ...] | None:
        """The worker's reply, or None when it went `stall_s` seconds without finishing a page."""
        self.jobs += 1
        self.send.send(request)
        return await_reply(self.recv, stall_s, on_progress, self.progress)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.send.close()
        self.recv.close()
        os.close(self.lifeline)


def await_reply(
    conn: Connection, stall_s: float | None, on_progress: Progress | None, seen: list[int] | None = None
) -> tuple[Any, ...] | None:
    """The first reply on `conn` that is not a progress report, or None when `stall_s` seconds pass
    with no message at all: each finished page restarts the clock, so only a parser that is stuck
    (or one page slower than `stall_s`) is stopped. `seen` gets the last [done, total]."""
    while True:
        if not conn.poll(stall_s):
            return None
        message = conn.recv()
        if message[0] != "progress":
            return message
        if seen is not None:
            seen[:] = [message[1], message[2]]
        if on_progress is not None:
            on_progress(message[1], message[2])


_idle: list[_Worker] = []
_lock = threading.Condition()
_busy = 0  # extractions running (each holds one worker, or is about to start one)


@contextmanager
def _slot(workers: int) -> Iterator[None]:
    """One of `workers` turns to extract (callers beyond wait)."""
    global _busy
    with _lock:
        _lock.wait_for(lambda: _busy < workers)
        _busy += 1
    try:
        yield
    finally:
        with _lock:
            _busy -= 1
            _lock.notify_all()


def _acquire(workers: int) -> _Worker:
    """An idle worker, or a new one, for a caller holding a slot. Idle workers beyond what the
    other slots leave are stopped: busy and idle workers together never outnumber `workers`, each
    of which may hold its share of the memory budget."""
    with _lock:
        live = [w for w in _idle if w.alive()]
        surplus = [w for w in _idle if not w.alive()]
        mine = live.pop() if live else None  # the most recently used: the warmest
        keep = max(0, workers - _busy)
        surplus += live[keep:]
        _idle[:] = live[:keep]
    for worker in surplus:
        worker.close()
    return mine if mine is not None else _Worker()


def _release(worker: _Worker, workers: int) -> None:
    """Keep `worker` for the next file when it may stay: it is counted busy until its slot ends."""
    with _lock:
        if worker.jobs < MAX_JOBS_PER_WORKER and worker.alive() and len(_idle) + _busy <= workers:
            _idle.append(worker)
            return
    worker.close()


@atexit.register
def shutdown() -> None:
    """Stop the idle workers (they would also exit on their own when our pipe closes)."""
    with _lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close()


def run_isolated(
    path: str, limits: Limits, keep_images: bool, on_progress: Progress | None = None
) -> Document:
    """Extract `path` in a worker process; kill it when no page finished for `limits.timeout_s`.

    At most `limits.workers(MAX_WORKERS)` extractions run at once; callers beyond that wait for a
    slot (the wait does not count against the timeout)."""
    with _slot(limits.workers(MAX_WORKERS)):
        try:
            return _run_in_worker(path, limits, keep_images, on_progress)
        except _WorkerDied as died:
            if limits.pdf_engine != "auto" or not _is_pdf(path):
                raise died.error from died.__cause__
            first = died
        # pdfium is C: a crash (or an allocation failure under the memory cap, which aborts) ends
        # the worker rather than raising. "auto" then asks pypdf, once, in a fresh worker.
        try:
            doc = _run_in_worker(path, replace(limits, pdf_engine="pypdf"), keep_images, on_progress)
        except _WorkerDied as again:
            raise again.error from again.__cause__
        note = f"pdf engine: the extraction worker died (exit code {first.code}); text from pypdf"
        return replace(doc, warnings=(note, *doc.warnings))


class _WorkerDied(Exception):
    def __init__(self, error: CorruptDocument, code: int | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = code


def _is_pdf(path: str) -> bool:
    """As `sniff` decides it: the PDF header in the first KiB."""
    try:
        with open(path, "rb") as fh:
            return b"%PDF-" in fh.read(1024)
    except OSError:
        return False


def _run_in_worker(
    path: str, limits: Limits, keep_images: bool, on_progress: Progress | None = None
) -> Document:
    workers = limits.workers(MAX_WORKERS)
    worker = _acquire(workers)
    worker.progress[:] = [0, 0]
    try:
        reply = worker.call(
            (path, limits, keep_images, limits.worker_memory(MAX_WORKERS)), limits.timeout_s, on_progress
        )
    except (EOFError, OSError) as exc:
        worker.close()
        code = worker.proc.returncode
        reason = f"extractor process died (exit code {code}): the file crashes the parser"
        raise _WorkerDied(CorruptDocument(path, reason), code) from exc
    if reply is None:
        worker.close()
        done, total = worker.progress
        where = f"after {done} of {total} pages" if total else "before the first page"
        hint = f"; raise {limits.timeout_hint} to allow slower pages" if limits.timeout_hint else ""
        raise ExtractionTimeout(
            path, f"no page finished for {limits.timeout_s:g} s ({where}); worker killed{hint}"
        )
    if reply[0] == "oom":  # its heap may be in any state after a MemoryError: start afresh
        worker.close()
        raise TooLarge(reply[1], reply[2])
    _release(worker, workers)
    if reply[0] == "ok":
        return reply[1]
    _, error_type, err_path, reason = reply
    cls = getattr(errors, error_type, ExtractionError)
    raise cls(err_path, reason)


def _result(
    path: str, limits: Limits, keep_images: bool, on_progress: FileProgress | None
) -> Document | ExtractionError:
    told = None if on_progress is None else (lambda done, total: on_progress(path, done, total))
    try:
        return run_isolated(path, limits, keep_images, told)
    except ExtractionError as exc:
        return exc


def extract_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    limits: Limits = Limits(),
    keep_images: bool = False,
    workers: int = 2,
    on_progress: FileProgress | None = None,
) -> Iterator[tuple[str, Document | ExtractionError]]:
    """Extract each file on one of `workers` worker processes; yield (path, Document or the
    ExtractionError) in INPUT order, never raising for one bad file. `on_progress(path, done, total)`
    is told from the pool's threads as each file's pages finish.

    At most 2 x workers files are in flight, so memory stays flat however many paths come in;
    a slow file holds back the yield of later ones, not their extraction. `limits.timeout_s`
    applies per file (None: no time limit).
    """
    width = max(1, workers)
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="kimidocs-extract") as pool:
        window: deque[tuple[str, Any]] = deque()
        for p in paths:
            path = os.fspath(p)
            window.append((path, pool.submit(_result, path, limits, keep_images, on_progress)))
            if len(window) >= 2 * width:
                done_path, future = window.popleft()
                yield done_path, future.result()
        while window:
            done_path, future = window.popleft()
            yield done_path, future.result()


if __name__ == "__main__":  # a worker: python -m extractors.isolation IN_FD OUT_FD LIFELINE_FD
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    _die_with_parent(int(sys.argv[3]))
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
