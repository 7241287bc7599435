"""A file's bytes, read so that no file can hang or flood the reader.

`open(path).read()` blocks forever on a FIFO, never ends on `/dev/zero`, and hashes a 30 GB
sparse file before any limit is looked at. Here the type and the size are checked first (on
the open descriptor, so a file swapped after the check is still caught), and no read goes past
the byte limit whatever the file claims. The document's identity (sha256) is computed from the
very bytes that are then extracted, so a file that changes while it is read cannot pair one
version's hash with another version's text.

    read_bytes(path, limits) -> bytes         the whole file, at most limits.max_bytes
    sha256_file(path, limits) -> str          its hex sha256, same checks, constant memory
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from extractors.errors import TooLarge, UnsupportedFormat
from extractors.limits import Limits

CHUNK = 1024 * 1024
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)"), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check(path: str, st: os.stat_result, limits: Limits) -> None:
    kind = not_regular(st.st_mode)
    if kind is not None:
        raise UnsupportedFormat(path, f"not a regular file: {kind}")
    limits.check_size(path, st.st_size)


@contextmanager
def _opened(path: str, limits: Limits) -> Iterator[int]:
    """A descriptor on a regular file within the byte limit. Checked before opening (opening a
    device can have effects) and again on the descriptor (the path may have been swapped)."""
    _check(path, os.stat(path), limits)
    # O_NONBLOCK: a FIFO put in place after the check must not block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check(path, os.fstat(fd), limits)
        yield fd
    finally:
        os.close(fd)


def _chunks(path: str, fd: int, limits: Limits, start: int = 0) -> Iterator[bytes]:
    """The descriptor's bytes, raising TooLarge as soon as they pass the limit (a growing file)."""
    total = start
    while True:
        if total > limits.max_bytes:
            raise TooLarge(path, f"grew past the limit of {limits.max_bytes:,} bytes while being read")
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return
        total += len(chunk)
        yield chunk


def read_bytes(path: str, limits: Limits) -> bytes:
    """The whole file. OSError (missing, unreadable) is the caller's to map."""
    with _opened(path, limits) as fd:
        size = os.fstat(fd).st_size
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            data = fh.read(size + 1)  # one buffer of the size fstat gave; one byte more tells a grown file
        rest = b"".join(_chunks(path, fd, limits, start=len(data)))
    return data + rest if rest else data


def sha256_file(path: str | os.PathLike[str], limits: Limits = Limits()) -> str:
    """Hex sha256 of the file's bytes: the document's identity across renames.

    Type and size are checked before the first byte is hashed; OSError passes through."""
    p = os.fspath(path)
    digest = hashlib.sha256()
    with _opened(p, limits) as fd:
        for chunk in _chunks(p, fd, limits):
            digest.update(chunk)
    return digest.hexdigest()
