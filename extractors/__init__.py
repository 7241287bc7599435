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
from extractors.sniff import sniff

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


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file's bytes: the document's identity across renames."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
    """`extract` in the calling process, whatever `limits.timeout_s` says."""
    p = os.fspath(path)
    try:
        size = os.stat(p).st_size
    except OSError as exc:
        raise UnsupportedFormat(p, f"cannot read the file ({exc.strerror or exc})") from exc
    limits.check_size(p, size)
    kind = sniff(p)
    digest = sha256_file(p)
    try:
        out = _read(p, kind, limits, keep_images)
    except ExtractionError:
        raise
    except Exception as exc:  # a reader bug or a file no reader foresaw: still one typed error per file
        raise CorruptDocument(p, f"{kind} reader failed: {type(exc).__name__}: {exc}") from exc
    return Document(
        path=p,
        sha256=digest,
        kind=kind,
        size=size,
        pages=out.pages,
        extractor_version=EXTRACTOR_VERSION,
        title=out.title,
        author=out.author,
        created=out.created,
        warnings=out.warnings,
    )


def _read(p: str, kind: str, limits: Limits, keep_images: bool) -> Extracted:
    if kind == "pdf":
        from extractors.pdf import extract_pdf

        return extract_pdf(p, limits, keep_images)
    elif kind == "docx":
        from extractors.docx import extract_docx

        return extract_docx(p, limits)
    from extractors.text import extract_text

    with open(p, "rb") as fh:
        return extract_text(p, fh.read(), limits)


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
