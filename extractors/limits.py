"""Bounds on what one extraction may cost: bytes read, pages produced, wall time, memory."""

from __future__ import annotations

import os
from dataclasses import dataclass

from extractors.errors import TooLarge

MiB = 1024 * 1024
GiB = 1024 * MiB

#: The smallest address space one extraction worker is given. Measured (BENCHMARKS.md, "Extraction
#: memory"): an idle worker takes ~100 MiB, and the most any file of the corpus needed was 178 MiB
#: (VmPeak; a 21 MB one-line text file; the 934-page book: 161 MiB with pdfium, 168 MiB with pypdf).
MIN_WORKER_MEMORY = 256 * MiB
#: All extraction workers of a process together, by default: two workers of 256 MiB.
DEFAULT_MEMORY_BUDGET = 512 * MiB

#: Which library reads PDF text: "auto" = pdfium, with pypdf for files pdfium refuses or finds
#: no text in (see `extractors.pdf_engine`); "pdfium" or "pypdf" = that one alone.
PDF_ENGINES = ("auto", "pdfium", "pypdf")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-document bounds. `timeout_s=None` runs in-process (no child process, no overhead);
    a number runs the extraction in a worker process that is killed when it goes `timeout_s` seconds
    without finishing a page. The bound is there to catch a stuck parser, not a long honest file: a
    934-page book that keeps finishing pages is never killed, however long it takes in all.
    `timeout_hint` names the setting that raises the bound, for the error message (`memory_hint`:
    the one that raises the memory budget).

    `memory_budget` is the address space (RLIMIT_AS) of all of this process's extraction workers
    together: fewer workers run at once when each would get less than `MIN_WORKER_MEMORY`, and each
    is capped at its share (`worker_memory`), so a file that would take more ends as TooLarge instead
    of swapping the machine or waking the OOM killer, and the process tree does not grow with the
    number of cores. It applies only in workers: capping the caller's own process would break the
    caller. None: no cap.

    `pdf_engine` is one of `PDF_ENGINES`."""

    max_bytes: int = 200 * MiB
    max_pages: int = 5000
    timeout_s: float | None = None
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET
    timeout_hint: str | None = None
    pdf_engine: str = "auto"
    memory_hint: str | None = None

    def __post_init__(self) -> None:
        if self.pdf_engine not in PDF_ENGINES:
            raise ValueError(f"pdf_engine must be one of {', '.join(PDF_ENGINES)}, not {self.pdf_engine!r}")

    def workers(self, most: int) -> int:
        """How many workers may run at once, out of `most`: as many as get `MIN_WORKER_MEMORY` each
        (at least one)."""
        if self.memory_budget is None:
            return max(1, most)
        return max(1, min(most, self.memory_budget // MIN_WORKER_MEMORY))

    def worker_memory(self, most: int) -> int | None:
        """The address-space cap of each worker when up to `most` may run: its share of the budget."""
        if self.memory_budget is None:
            return None
        return self.memory_budget // self.workers(most)

    def check_size(self, path: str, size: int) -> None:
        """Before reading anything: a file over the byte limit is never opened."""
        if size > self.max_bytes:
            raise TooLarge(path, f"{size:,} bytes is over the limit of {self.max_bytes:,} bytes")

    def check_pages(self, path: str, pages: int) -> None:
        if pages > self.max_pages:
            raise TooLarge(path, f"{pages:,} pages is over the limit of {self.max_pages:,} pages")


def file_size(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_size
