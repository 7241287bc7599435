"""Find the documents under a folder: include/exclude globs, no symlink loops, unreadable files reported.

Pure file-system code (no hashing, no extraction) so a folder of 10,000 files is listed in
milliseconds and the work can then be spread over workers. What cannot be a document is reported,
not opened: a FIFO or a device (opening one blocks or never ends), a subfolder that cannot be
listed. Each becomes a `FoundFile` with `error` set, so the run records it and goes on.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from extractors.source import not_regular

DEFAULT_INCLUDE: tuple[str, ...] = ("*.pdf", "*.docx", "*.txt", "*.md")
DEFAULT_EXCLUDE: tuple[str, ...] = ("~$*", ".*")  # Word lock files, hidden files
UNREADABLE_FILE = "UnreadableFile"
UNREADABLE_FOLDER = "UnreadableFolder"
NOT_REGULAR_FILE = "NotRegularFile"


class FolderError(Exception):
    """The folder to analyse is missing, not a folder, or unreadable."""


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A candidate file, or one we could not read (`error` set, `error_type` says why).

    `path` is the name as the OS gave it (a non-UTF-8 byte as a surrogate, see `kimidocs.core.paths`)."""

    path: str
    size: int
    mtime: datetime
    error: str | None = None
    error_type: str = UNREADABLE_FILE


def _matches(name: str, rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns)


def discover(
    folder: str | os.PathLike[str],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[FoundFile]:
    """Every matching file under `folder`, sorted by path, each once (even through symlinks)."""
    root = Path(folder)
    if not root.exists():
        raise FolderError(f"{root}: folder does not exist")
    if root.is_file():
        return [_stat(root)]
    if not root.is_dir():
        raise FolderError(f"{root}: not a folder")
    inc = tuple(include) if include else DEFAULT_INCLUDE
    exc = tuple(exclude) if exclude else DEFAULT_EXCLUDE
    found = [f for f in _walk(root, inc, exc)]
    return sorted(found, key=lambda f: f.path)


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str]) -> Iterator[FoundFile]:
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    unlisted: list[FoundFile] = []

    def onerror(err: OSError) -> None:
        if os.fspath(err.filename) == os.fspath(root):  # the folder asked for: nothing to analyse
            raise FolderError(f"{err.filename}: cannot list folder ({err.strerror})") from err
        unlisted.append(_unlisted(err))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        yield from unlisted
        unlisted.clear()
        try:
            st = os.stat(dirpath)
        except OSError as err:  # removed since it was listed
            yield _unlisted(err)
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop or a second link to a folder
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if not _matches(name, rel, include) or _matches(name, rel, exclude):
                continue
            found = _stat(full)
            if found.error is None:
                key = (os.stat(full).st_dev, os.stat(full).st_ino)
                if key in seen_files:
                    continue
                seen_files.add(key)
            yield found
    yield from unlisted


def _unlisted(err: OSError) -> FoundFile:
    """A subfolder that could not be listed: recorded as one failure, the walk goes on."""
    return FoundFile(
        os.fspath(err.filename),
        0,
        datetime.now(UTC),
        error=f"cannot list folder ({err.strerror or err})",
        error_type=UNREADABLE_FOLDER,
    )


def _stat(path: Path) -> FoundFile:
    try:
        st = path.stat()
        if not os.access(path, os.R_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        return FoundFile(str(path), 0, datetime.now(UTC), error=f"unreadable: {err.strerror or err}")
    mtime = datetime.fromtimestamp(st.st_mtime, UTC)
    if (kind := not_regular(st.st_mode)) is not None:
        reason = f"not a regular file: {kind}"
        return FoundFile(str(path), 0, mtime, error=reason, error_type=NOT_REGULAR_FILE)
    return FoundFile(str(path), st.st_size, mtime)
