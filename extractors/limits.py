"""Bounds on what one extraction may cost: bytes read, pages produced, wall time, memory."""

from __future__ import annotations

import os
from dataclasses import dataclass

from extractors.errors import TooLarge

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Which library reads PDF text: "auto" = pdfium, with pypdf for files pdfium refuses or finds
#: no text in (see `extractors.pdf_engine`); "pdfium" or "pypdf" = that one alone.
PDF_ENGINES = ("auto", "pdfium", "pypdf")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-document bounds. `timeout_s=None` runs in-process (no child process, no overhead);
    a number runs the extraction in a worker process that is killed when it goes `timeout_s` seconds
    without finishing a page. The bound is there to catch a stuck parser, not a long honest file: a
    934-page book that keeps finishing pages is never killed, however long it takes in all.
    `timeout_hint` names the setting that raises the bound, for the error message.

    `max_memory` caps the worker's address space (RLIMIT_AS), so a file that would take more
    ends as TooLarge instead of swapping the machine or waking the OOM killer. It applies only
    in a worker: capping the caller's own process would break the caller. None: no cap.

    `pdf_engine` is one of `PDF_ENGINES`."""

    max_bytes: int = 200 * MiB
    max_pages: int = 5000
    timeout_s: float | None = None
    max_memory: int | None = 2 * GiB
    timeout_hint: str | None = None
    pdf_engine: str = "auto"

    def __post_init__(self) -> None:
        if self.pdf_engine not in PDF_ENGINES:
            raise ValueError(f"pdf_engine must be one of {', '.join(PDF_ENGINES)}, not {self.pdf_engine!r}")

    def check_size(self, path: str, size: int) -> None:
        """Before reading anything: a file over the byte limit is never opened."""
        if size > self.max_bytes:
            raise TooLarge(path, f"{size:,} bytes is over the limit of {self.max_bytes:,} bytes")

    def check_pages(self, path: str, pages: int) -> None:
        if pages > self.max_pages:
            raise TooLarge(path, f"{pages:,} pages is over the limit of {self.max_pages:,} pages")


def file_size(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_size
