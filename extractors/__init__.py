"""File -> `Document`: PDF (pdfium or pypdf: extractors.pdf_engine), DOCX (lxml over OOXML), plain text.

    extract(path, limits=Limits(), keep_images=False) -> Document     one file, typed errors
    extract_many(paths, limits=..., workers=2) -> (path, Document | ExtractionError) pairs
    sniff(path) -> "pdf" | "docx" | "text"                             from magic bytes
    quality(doc) -> QualityReport                                      the gate before any spend

Imports nothing of kimidocs: this package can be used (and tested) on its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator

from extractors.document import Document, Page, PageImage
from extractors.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ExtractionError,
    ExtractionTimeout,
    NoTextLayer,
    TooLarge,
    UnsupportedFormat,
)
from extractors.limits import Limits
from extractors.paging import Extracted
from extractors.quality import QualityReport, quality
from extractors.sniff import sniff, sniff_bytes
from extractors.source import read_bytes, sha256_file

#: Told `(pages_done, pages_total)` as an extraction goes: pages finished so far, out of all.
Progress = Callable[[int, int], None]

# Bump when the text produced for the same bytes changes: stored documents record it, so a
# re-extraction can be scheduled for files extracted by an older version.
EXTRACTOR_VERSION = "1.3.0"  # 1.1: PDF tabs and space runs folded; 1.2: NFKC; 1.3: pdfium engine
#: A PDF's `Document.extractor_version` adds the engine that read its text: "1.3.0+pdfium", "1.3.0+pypdf".

__all__ = [
    "EXTRACTOR_VERSION",
    "CorruptDocument",
    "Document",
    "EmptyDocument",
    "EncryptedDocument",
    "ExtractionError",
    "ExtractionTimeout",
    "Limits",
    "NoTextLayer",
    "Page",
    "PageImage",
    "Progress",
    "QualityReport",
    "TooLarge",
    "UnsupportedFormat",
    "extract",
    "extract_many",
    "quality",
    "sha256_file",
    "sniff",
]


def extract(
    path: str | os.PathLike[str],
    *,
    limits: Limits = Limits(),
    keep_images: bool = False,
    on_progress: Progress | None = None,
) -> Document:
    """Read one file into a Document, or raise the ExtractionError that says why not.

    With `limits.timeout_s` set, the work runs in a worker process that is killed when it stops
    finishing pages for that long (ExtractionTimeout); without it, in this process at no extra cost.
    `on_progress(pages_done, pages_total)` is told as pages finish (from the worker, when there is one).
    """
    if limits.timeout_s is not None:
        from extractors.isolation import run_isolated

        return run_isolated(os.fspath(path), limits, keep_images, on_progress)
    return extract_here(path, limits=limits, keep_images=keep_images, on_progress=on_progress)


def extract_here(
    path: str | os.PathLike[str],
    *,
    limits: Limits = Limits(),
    keep_images: bool = False,
    on_progress: Progress | None = None,
) -> Document:
    """`extract` in the calling process, whatever `limits.timeout_s` says.

    The file is read once: its sha256 and its text come from the same bytes."""
    p = os.fspath(path)
    try:
        data = read_bytes(p, limits)  # a FIFO, a device, an oversized file: refused before reading
    except OSError as exc:
        raise UnsupportedFormat(p, f"cannot read the file ({exc.strerror or exc})") from exc
    kind = sniff_bytes(p, data)
    digest = hashlib.sha256(data).hexdigest()
    try:
        out = _read(p, data, kind, limits, keep_images, on_progress or _nothing)
    except (ExtractionError, MemoryError):  # MemoryError: the worker maps it under its memory cap
        raise
    except Exception as exc:  # a reader bug or a file no reader foresaw: still one typed error per file
        raise CorruptDocument(p, f"{kind} reader failed: {type(exc).__name__}: {exc}") from exc
    return Document(
        path=p,
        sha256=digest,
        kind=kind,
        size=len(data),
        pages=out.pages,
        extractor_version=f"{EXTRACTOR_VERSION}+{out.engine}" if out.engine else EXTRACTOR_VERSION,
        title=out.title,
        author=out.author,
        created=out.created,
        warnings=out.warnings,
    )


def _nothing(done: int, total: int) -> None:
    """No one asked for progress."""


def _read(
    p: str, data: bytes, kind: str, limits: Limits, keep_images: bool, on_progress: Progress
) -> Extracted:
    if kind == "pdf":
        from extractors.pdf_engine import read_pdf

        return read_pdf(p, data, limits, keep_images, on_progress)
    elif kind == "docx":
        from extractors.docx import extract_docx

        out = extract_docx(p, data, limits)
    else:
        from extractors.text import extract_text

        out = extract_text(p, data, limits)
    on_progress(len(out.pages), len(out.pages))  # one parse: done when it is done
    return out


def extract_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    limits: Limits = Limits(),
    keep_images: bool = False,
    workers: int = 2,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[tuple[str, Document | ExtractionError]]:
    """Extract many files on `workers` processes, yielding (path, Document or ExtractionError)
    in input order and never raising for one bad file (see `extractors.isolation`)."""
    from extractors.isolation import extract_many as _many

    return _many(paths, limits=limits, keep_images=keep_images, workers=workers, on_progress=on_progress)
