"""PDF -> pages with pdfium (pypdfium2): the fast engine, one `Page` per PDF page.

pdfium is the C++ PDF library of Chromium; on the corpus it reads text about 10-17x faster than
pypdf with the same similarity to the ground truths, and it recovers files pypdf gives up on
(no startxref, broken content streams) and vertical CJK text pypdf garbles. See BENCHMARKS.md.

What differs from the pypdf engine, and why:
- Text: `FPDFText_GetText` per page. pdfium ends lines with CR LF (made LF) and joins a word
  hyphenated at a line end, marking the join with U+FFFE (dropped: "peri-/odic" -> "periodic");
  glyphs with no Unicode mapping come out as C0 control codes (dropped). Then the same
  `fold_spaces` + `clean` (NFKC) as the pypdf engine.
- Image counts come from the page's resource dictionaries, read with pypdf exactly as the pypdf
  engine does (no content parsing, ~0.1 s for a 467-page book), so `Page.image_count` means the
  same whichever engine read the text. Walking pdfium's page objects instead costs one ctypes
  call per glyph run: 1.7 s on that book, more than the text itself. When pypdf cannot read the
  structure, pdfium's object walk is the fallback.
- Page images (`keep_images`, for pages with images and no text): the page is rendered by pdfium
  (what a reader sees: every image strip, mask and vector overlay, in one picture), at up to
  `RENDER_DPI` with the longer side at most `MAX_IMAGE_SIDE`, as JPEG.
- Warnings: pdfium repairs silently; structural repairs pypdf logs while the resource
  dictionaries are read (a bad startxref...) become warnings, as with the pypdf engine.

pdfium is not thread-safe: one lock serialises it within a process (extraction workers are
separate processes, so they run side by side). A C call cannot be interrupted from Python;
the per-page progress lets `extractors.isolation` kill a worker stuck inside one.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from extractors.document import Page, PageImage
from extractors.errors import CorruptDocument, EmptyDocument, EncryptedDocument
from extractors.limits import Limits
from extractors.paging import Extracted, clean, fold_spaces
from extractors.pdf import (
    MAX_IMAGE_SIDE,
    PAGE_IMAGE_BUDGET,
    _captured_pypdf_log,
    _count_images,
    _short,
    check_text_layer,
    read_pages,
)

ENGINE = "pdfium"
RENDER_DPI = 200  # scanned pages are rendered at this resolution, capped at MAX_IMAGE_SIDE pixels
JPEG_QUALITIES = (85, 70, 50)  # tried in turn until the page image fits the per-page budget

_LOCK = threading.Lock()  # pdfium keeps global state: one document at a time per process
# CR (pdfium's line ends), U+FFFE (its mark for a hyphen removed at a line end) and the C0
# controls unmapped glyphs come out as; tab and LF are kept for fold_spaces and the lines.
_PDFIUM_JUNK = re.compile("[\x00-\x08\x0b-\x1f\ufffe]")


def extract_pdfium(
    path: str,
    data: bytes,
    limits: Limits,
    keep_images: bool,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    blank_is_error: bool = False,
) -> Extracted:
    """Like `extractors.pdf.extract_pdf`, with pdfium. `blank_is_error`: raise NoTextLayer /
    EmptyDocument when no page has text even if `keep_images` asks for page images (the "auto"
    engine then asks pypdf before rendering anything)."""
    if not data:
        raise EmptyDocument(path, "zero-byte file")
    with _LOCK, _captured_pypdf_log() as log:
        doc = _open(path, data)
        try:
            count = len(doc)
            limits.check_pages(path, count)
            count_images = _image_counter(data, doc, count)
            warnings: list[str] = []

            def read(i: int) -> tuple[str, int, str | None]:
                text, problem = _page_text(doc, i)
                return text, count_images(i), problem

            pages = read_pages(path, count, read, warnings, on_progress)
            check_text_layer(path, pages, scanned_ok=keep_images and not blank_is_error)
            if keep_images:
                pages = [_with_render(doc, p, warnings) if p.needs_ocr else p for p in pages]
            title, author, created = _metadata(doc)
        finally:
            doc.close()
    warnings.extend(log.summary())
    return Extracted(tuple(pages), tuple(warnings), title, author, created, engine=ENGINE)


def _open(path: str, data: bytes) -> pdfium.PdfDocument:
    """pdfium tries the empty user password by itself (R6 AES-256 and owner-only files open)."""
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            raise EncryptedDocument(
                path, "encrypted: needs a password (the empty password did not open it)"
            ) from exc
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_SECURITY:
            raise EncryptedDocument(path, f"encrypted with an unsupported security handler ({exc})") from exc
        raise CorruptDocument(path, f"cannot read the PDF structure (pdfium: {exc})") from exc


def _page_text(doc: pdfium.PdfDocument, i: int) -> tuple[str, str | None]:
    """(text, problem). A page pdfium cannot load gives empty text and a problem string."""
    try:
        page = doc[i]
    except MemoryError:
        raise
    except Exception as exc:
        return "", f"{type(exc).__name__}: {_short(exc)}"
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_range()
        finally:
            textpage.close()
    except MemoryError:
        raise
    except Exception as exc:
        return "", f"{type(exc).__name__}: {_short(exc)}"
    finally:
        page.close()
    return clean(fold_spaces(normalise(raw))), None


def normalise(raw: str) -> str:
    """pdfium's raw page text -> the text the pypdf engine would hand to fold_spaces/clean."""
    return _PDFIUM_JUNK.sub("", raw.replace("\r\n", "\n").replace("\r", "\n"))


def _image_counter(data: bytes, doc: pdfium.PdfDocument, count: int) -> Callable[[int], int]:
    """Images per page from the resource dictionaries (pypdf, cheap), or pdfium's object walk
    when pypdf cannot read the file or sees another number of pages."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            reader.decrypt("")
        if len(reader.pages) == count:
            return lambda i: _count_images(reader.pages[i])
    except MemoryError:
        raise
    except Exception:
        pass
    return lambda i: _walk_images(doc, i)


def _walk_images(doc: pdfium.PdfDocument, i: int) -> int:
    try:
        page = doc[i]
    except Exception:
        return 0
    try:
        return sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3))
    except Exception:
        return 0
    finally:
        page.close()


def _with_render(doc: pdfium.PdfDocument, page: Page, warnings: list[str]) -> Page:
    """Attach the rendered page (JPEG, within the per-page budget) for a multimodal model."""
    try:
        image = render_page(doc, page.number - 1)
    except MemoryError:
        raise
    except Exception as exc:
        warnings.append(f"page {page.number}: page image not rendered ({type(exc).__name__}: {_short(exc)})")
        return page
    if image is None:
        warnings.append(f"page {page.number}: page image over the {PAGE_IMAGE_BUDGET:,}-byte page budget")
        return page
    return Page(page.number, page.text, page.image_count, page.label, (image,))


def render_page(doc: pdfium.PdfDocument, index: int) -> PageImage | None:
    page = doc[index]
    try:
        width, height = page.get_size()
        scale = min(RENDER_DPI / 72, MAX_IMAGE_SIDE / max(width, height, 1.0))
        pil = page.render(scale=scale).to_pil()
    finally:
        page.close()
    if pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    for quality in JPEG_QUALITIES:
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality)
        if buf.tell() <= PAGE_IMAGE_BUDGET:
            return PageImage("image/jpeg", buf.getvalue())
    return None


def _metadata(doc: pdfium.PdfDocument) -> tuple[str | None, str | None, str | None]:
    try:
        meta: dict[str, Any] = doc.get_metadata_dict(skip_empty=True)
    except Exception:
        return None, None, None
    return _field(meta.get("Title")), _field(meta.get("Author")), pdf_date(meta.get("CreationDate"))


def _field(value: str | None) -> str | None:
    value = clean(value).strip() if value else ""
    return value or None


_DATE = re.compile(
    r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*(?:([Zz])|([+-])(\d{2})'?(\d{2})?'?)?"
)


def pdf_date(text: str | None) -> str | None:
    """A PDF date string (`D:YYYYMMDDHHmmSS+HH'mm'`, fields from the month on optional) -> ISO 8601,
    as pypdf's `creation_date.isoformat()` gives it; None for an unreadable one."""
    m = _DATE.match(text.strip()) if text else None
    if m is None:
        return None
    year, month, day, hour, minute, second, zulu, sign, tz_h, tz_m = m.groups()
    tz = None
    if zulu:
        tz = UTC
    elif sign:
        offset = timedelta(hours=int(tz_h), minutes=int(tz_m or 0))
        tz = timezone(-offset if sign == "-" else offset)
        if not offset:
            tz = UTC
    try:
        value = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=tz,
        )
    except ValueError:
        return None
    return value.isoformat()
