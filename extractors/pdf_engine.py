"""Which library reads a PDF: pdfium (fast, C++) or pypdf (pure Python, the reference).

`Limits.pdf_engine`:
    "pypdf"   pypdf alone (extractors.pdf)
    "pdfium"  pdfium alone (extractors.pdf_pdfium)
    "auto"    pdfium first; pypdf when pdfium reads the file worse, by this rule:
              - pdfium cannot open it (other than for a password: both engines try only the empty
                one), or cannot read any of its pages;
              - pdfium finds no text on any page, and pypdf finds some;
              - at least `RTL_SHARE` of pdfium's text is Arabic script: pdfium writes the two
                letters of a lam-alef ligature in reverse order and misplaces the space next to
                embedded Latin words (right_to_left_01.pdf: 86.3 against pypdf's 95.4, BENCHMARKS.md).
                pypdf's text is used unless pypdf fails on the file.
              A password, the page limit or the memory cap ends the file whatever the engine.

When pypdf's text is used, `Extracted.engine` says "pypdf" (so `Document.extractor_version` ends in
"+pypdf") and a warning says why. When neither finds text, pdfium's verdict stands (NoTextLayer, or
its rendered page images when the caller keeps images). Progress restarts at page 1 for each engine
that reads the file; each finished page still resets the isolation time bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from extractors.errors import CorruptDocument, EmptyDocument, ExtractionError, NoTextLayer
from extractors.limits import Limits
from extractors.paging import Extracted

Progress = Callable[[int, int], None]

RTL_SHARE = 0.05  # of the non-space characters; Arabic letters are rare in other documents
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc]")
_SPACE = re.compile(r"\s")


def read_pdf(path: str, data: bytes, limits: Limits, keep_images: bool, on_progress: Progress) -> Extracted:
    if limits.pdf_engine == "pypdf":
        return _pypdf(path, data, limits, keep_images, on_progress)
    if limits.pdf_engine == "pdfium":
        return _pdfium(path, data, limits, keep_images, on_progress)
    return _auto(path, data, limits, keep_images, on_progress)


def _auto(path: str, data: bytes, limits: Limits, keep_images: bool, on_progress: Progress) -> Extracted:
    try:
        first = _pdfium(path, data, limits, keep_images, on_progress, blank_is_error=True)
    except CorruptDocument as refused:
        out = _pypdf(path, data, limits, keep_images, on_progress)  # pypdf's own error if it fails too
        return _noted(out, f"pdfium could not read the file ({refused.reason})")
    except (NoTextLayer, EmptyDocument) as blank:
        try:
            out = _pypdf(path, data, limits, False, on_progress)
        except (NoTextLayer, EmptyDocument, CorruptDocument):
            if keep_images and isinstance(blank, NoTextLayer):  # scanned: pdfium renders the pages
                return _pdfium(path, data, limits, True, on_progress)
            raise blank from None
        if keep_images and any(p.needs_ocr for p in out.pages):
            out = _pypdf(path, data, limits, True, on_progress)
        return _noted(out, "pdfium found no text on any page and pypdf did")
    share = arabic_share(first)
    if share < RTL_SHARE:
        return first
    try:
        out = _pypdf(path, data, limits, keep_images, on_progress)
    except ExtractionError:
        return first
    return _noted(out, f"{share:.0%} of the text is Arabic script, which pdfium reads worse")


def arabic_share(out: Extracted) -> float:
    """Arabic-script characters / non-space characters of the extracted text (0.0 for none)."""
    arabic = chars = 0
    for page in out.pages:
        arabic += len(_ARABIC.findall(page.text))
        chars += len(page.text) - len(_SPACE.findall(page.text))
    return arabic / chars if chars else 0.0


def _noted(out: Extracted, why: str) -> Extracted:
    note = f"pdf engine: {why}; text from pypdf"
    return Extracted(out.pages, (note, *out.warnings), out.title, out.author, out.created, out.engine)


def _pypdf(path: str, data: bytes, limits: Limits, keep_images: bool, on_progress: Progress) -> Extracted:
    from extractors.pdf import extract_pdf

    return extract_pdf(path, data, limits, keep_images, on_progress)


def _pdfium(
    path: str,
    data: bytes,
    limits: Limits,
    keep_images: bool,
    on_progress: Progress,
    *,
    blank_is_error: bool = False,
) -> Extracted:
    from extractors.pdf_pdfium import extract_pdfium

    return extract_pdfium(path, data, limits, keep_images, on_progress, blank_is_error=blank_is_error)
