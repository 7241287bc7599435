"""File -> `Document`: PDF (pypdf), DOCX (lxml over the OOXML parts), plain text.

    extract(path, limits=Limits(), keep_images=False) -> Document     one file, typed errors
    extract_many(paths, limits=..., workers=2) -> (path, Document | ExtractionError) pairs
    sniff(path) -> "pdf" | "docx" | "text"                             from magic bytes
    quality(doc) -> QualityReport                                      the gate before any spend

Imports nothing of kimidocs: this package can be used (and tested) on its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

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

# Bump when the text produced for the same bytes changes: stored documents record it, so a
# re-extraction can be scheduled for files extracted by an older version.
EXTRACTOR_VERSION = "1.2.0"  # 1.1: PDF tabs and space runs folded; 1.2: NFKC

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
    path: str | os.PathLike[str], *, limits: Limits = Limits(), keep_images: bool = False
) -> Document:
    """Read one file into a Document, or raise the ExtractionError that says why not.

    With `limits.timeout_s` set, the work runs in a worker process that is killed when the
    time is up (ExtractionTimeout); without it, in this process at no extra cost.
    """
    if limits.timeout_s is not None:
        from extractors.isolation import run_isolated

        return run_isolated(os.fspath(path), limits, keep_images)
    return extract_here(path, limits=limits, keep_images=keep_images)


def extract_here(
    path: str | os.PathLike[str], *, limits: Limits = Limits(), keep_images: bool = False
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
        out = _read(p, data, kind, limits, keep_images)
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
        extractor_version=EXTRACTOR_VERSION,
        title=out.title,
        author=out.author,
        created=out.created,
        warnings=out.warnings,
    )


def _read(p: str, data: bytes, kind: str, limits: Limits, keep_images: bool) -> Extracted:
    if kind == "pdf":
        from extractors.pdf import extract_pdf

        return extract_pdf(p, data, limits, keep_images)
    elif kind == "docx":
        from extractors.docx import extract_docx

        return extract_docx(p, data, limits)
    from extractors.text import extract_text

    return extract_text(p, data, limits)


def extract_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    limits: Limits = Limits(),
    keep_images: bool = False,
    workers: int = 2,
) -> Iterator[tuple[str, Document | ExtractionError]]:
    """Extract many files on `workers` processes, yielding (path, Document or ExtractionError)
    in input order and never raising for one bad file (see `extractors.isolation`)."""
    from extractors.isolation import extract_many as _many

    return _many(paths, limits=limits, keep_images=keep_images, workers=workers)
