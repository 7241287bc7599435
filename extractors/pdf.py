"""PDF -> pages with pypdf: one `Page` per PDF page, bad pages skipped with a warning.

The reference engine (pure Python), and the fallback of the "auto" engine (`extractors.pdf_engine`)
for files pdfium refuses or reads no text from.

One pass: each page's content stream is parsed once, by `extract_text`. Image counts come
from the page's resource dictionary (no content parsing), and image bytes are decoded only
for pages that need them (no text, images present, and the caller asked for images).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, EmptyFileError, LimitReachedError
from pypdf.generic import IndirectObject

from extractors.document import Page, PageImage
from extractors.errors import CorruptDocument, EmptyDocument, EncryptedDocument, NoTextLayer, TooLarge
from extractors.limits import Limits
from extractors.paging import Extracted, clean, fold_spaces

ENGINE = "pypdf"
PAGE_IMAGE_BUDGET = 4 * 1024 * 1024  # bytes of images kept per page (base64 adds a third)
MAX_IMAGE_SIDE = 2048  # pixels; larger scans are downscaled before sending to a model
MIN_IMAGE_SIDE = 16  # smaller images are masks and decorations, not content
MAX_LOG_WARNINGS = 20
# Messages about our environment rather than the file: not the document's oddities.
IGNORED_LOG_PREFIXES = ("fontTools is required",)


def extract_pdf(
    path: str,
    data: bytes,
    limits: Limits,
    keep_images: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> Extracted:
    with _captured_pypdf_log() as log:
        reader = _open(path, data)
        try:
            count = len(reader.pages)
        except Exception as exc:  # pypdf raises many types for a broken page tree
            raise CorruptDocument(path, f"cannot read the page tree ({type(exc).__name__}: {exc})") from exc
        limits.check_pages(path, count)
        warnings: list[str] = []
        pages = read_pages(path, count, lambda i: _read_page(path, reader, i), warnings, on_progress)
        check_text_layer(path, pages, scanned_ok=keep_images)
        if keep_images:
            pages = [_with_images(reader, p, warnings) if p.needs_ocr else p for p in pages]
        title, author, created = _metadata(reader)
    warnings.extend(log.summary())
    return Extracted(tuple(pages), tuple(warnings), title, author, created, engine=ENGINE)


PageReader = Callable[[int], tuple[str, int, str | None]]  # page index -> (text, image count, problem)


def read_pages(
    path: str,
    count: int,
    read: PageReader,
    warnings: list[str],
    on_progress: Callable[[int, int], None] | None,
) -> list[Page]:
    """Every page through `read`, whatever the engine: a page that fails is a warning and empty text,
    progress is told after each page, and a document whose every page failed is CorruptDocument."""
    pages: list[Page] = []
    failed = 0
    for i in range(count):
        text, images, problem = read(i)
        if problem:
            failed += 1
            warnings.append(f"page {i + 1}: {problem}; text skipped")
        pages.append(Page(i + 1, text, image_count=images))
        if on_progress is not None:
            on_progress(i + 1, count)
    if count and failed == count:
        raise CorruptDocument(path, f"no page could be read ({warnings[0]})")
    return pages


def check_text_layer(path: str, pages: list[Page], *, scanned_ok: bool) -> None:
    """No text anywhere: EmptyDocument without images, NoTextLayer (scanned) unless the caller takes
    page images (`scanned_ok`)."""
    if any(p.text.strip() for p in pages):
        return
    if not any(p.image_count for p in pages):
        raise EmptyDocument(path, f"no text and no images on {len(pages)} page(s)")
    if not scanned_ok:
        raise NoTextLayer(path, f"scanned: {len(pages)} page(s) with images and no text layer (needs OCR)")


def _open(path: str, data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except EmptyFileError as exc:
        raise EmptyDocument(path, "zero-byte file") from exc
    except LimitReachedError as exc:
        raise _bomb(path, "the PDF structure", exc) from exc
    except MemoryError:  # over the worker's memory cap: TooLarge, not a damaged file
        raise
    except Exception as exc:  # PdfReadError, PdfStreamError, ValueError...: structure unrecoverable
        raise CorruptDocument(path, f"cannot read the PDF structure ({type(exc).__name__}: {exc})") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:
            raise EncryptedDocument(path, f"encrypted, and the decryptor is missing ({exc})") from exc
        except Exception as exc:
            raise EncryptedDocument(
                path, f"encrypted, and decryption failed ({type(exc).__name__}: {exc})"
            ) from exc
        if opened == PasswordType.NOT_DECRYPTED:
            raise EncryptedDocument(path, "encrypted: needs a password (the empty password did not open it)")
    return reader


def _read_page(path: str, reader: PdfReader, i: int) -> tuple[str, int, str | None]:
    """(text, image count, problem). A page that raises gives empty text and a problem string, but
    a stream past pypdf's decompression limit ends the document as TooLarge (a Flate bomb)."""
    try:
        page = reader.pages[i]
    except LimitReachedError as exc:
        raise _bomb(path, f"page {i + 1}", exc) from exc
    except Exception as exc:
        return "", 0, f"{type(exc).__name__}: {_short(exc)}"
    images = _count_images(page)
    try:
        return clean(fold_spaces(page.extract_text() or "")), images, None
    except MemoryError:  # the whole document is over the memory cap, not just this page
        raise
    except LimitReachedError as exc:
        raise _bomb(path, f"page {i + 1}", exc) from exc
    except Exception as exc:  # pypdf's content parser raises many types on damaged streams
        return "", images, f"{type(exc).__name__}: {_short(exc)}"


def _bomb(path: str, where: str, exc: LimitReachedError) -> TooLarge:
    """pypdf stops inflating a stream at its output limit (75 MB): no honest page needs that much."""
    return TooLarge(path, f"{where}: a stream inflates past pypdf's limit: a decompression bomb ({exc})")


def _count_images(page: Any) -> int:
    """Image XObjects drawn by the page, looking one level into form XObjects. Cheap: resource
    dictionaries only, no content stream parsing. Guarded against recursive forms."""
    try:
        return _images_in(page.get("/Resources"), depth=0, seen=set())
    except Exception:
        return 0


def _images_in(resources: Any, depth: int, seen: set[int]) -> int:
    if resources is None or depth > 3:
        return 0
    xobjects = resources.get_object().get("/XObject")
    if xobjects is None:
        return 0
    n = 0
    for ref in xobjects.get_object().values():
        key = ref.idnum if isinstance(ref, IndirectObject) else id(ref)
        if key in seen:
            continue
        seen.add(key)
        obj = ref.get_object()
        subtype = obj.get("/Subtype")
        if subtype == "/Image":
            n += 1
        elif subtype == "/Form":
            n += _images_in(obj.get("/Resources"), depth + 1, seen)
    return n


def _with_images(reader: PdfReader, page: Page, warnings: list[str]) -> Page:
    """Attach the page's images (JPEG/PNG, downscaled, within the per-page budget)."""
    kept: list[PageImage] = []
    used = 0
    try:
        images = reader.pages[page.number - 1].images
        names = list(images.keys())
    except Exception as exc:
        warnings.append(f"page {page.number}: images unreadable ({type(exc).__name__}: {_short(exc)})")
        return page
    for name in names:
        try:
            image = _encode(images[name])
        except Exception as exc:  # missing decoder (JBIG2, ...), damaged stream
            warnings.append(f"page {page.number}: image {name} skipped ({type(exc).__name__}: {_short(exc)})")
            continue
        if image is None:
            continue
        if used + len(image.data) > PAGE_IMAGE_BUDGET:
            warnings.append(
                f"page {page.number}: image {name} skipped (over the {PAGE_IMAGE_BUDGET:,}-byte page budget)"
            )
            continue
        used += len(image.data)
        kept.append(image)
    return Page(page.number, page.text, page.image_count, page.label, tuple(kept))


def _encode(image: Any) -> PageImage | None:
    """pypdf's decoded image -> PNG/JPEG bytes a model accepts; tiny masks dropped."""
    pil = image.image
    if pil is None or min(pil.size) < MIN_IMAGE_SIDE:
        return None
    name = str(image.name).lower()
    if max(pil.size) <= MAX_IMAGE_SIDE:
        if name.endswith((".jpg", ".jpeg")):
            return PageImage("image/jpeg", image.data)
        if name.endswith(".png"):
            return PageImage("image/png", image.data)
    pil = pil.copy()
    pil.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    if pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=85)
    return PageImage("image/jpeg", buf.getvalue())


def _metadata(reader: PdfReader) -> tuple[str | None, str | None, str | None]:
    """Title, author, ISO creation date; a malformed info dictionary gives None, not an error."""
    try:
        meta = reader.metadata
    except Exception:
        return None, None, None
    if meta is None:
        return None, None, None
    return (
        _field(lambda: meta.title),
        _field(lambda: meta.author),
        _field(lambda: meta.creation_date.isoformat()),  # type: ignore[union-attr]
    )


def _field(get: Any) -> str | None:
    try:
        value = get()
    except Exception:
        return None
    value = clean(str(value)).strip() if value is not None else ""
    return value or None


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _LogCapture(logging.Handler):
    """Collects pypdf's warnings (repaired xref, bad objects) logged by this thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        msg = record.getMessage()
        if msg.startswith(IGNORED_LOG_PREFIXES):
            return
        key = _short(Exception(msg))
        self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self) -> list[str]:
        out = [f"pypdf: {m}" + (f" (x{n})" if n > 1 else "") for m, n in self.counts.items()]
        if len(out) > MAX_LOG_WARNINGS:
            out = [*out[:MAX_LOG_WARNINGS], f"pypdf: {len(out) - MAX_LOG_WARNINGS} more distinct warnings"]
        return out


@contextmanager
def _captured_pypdf_log() -> Iterator[_LogCapture]:
    """Route pypdf's log warnings into Document.warnings instead of stderr, for this call."""
    handler = _LogCapture()
    logger = logging.getLogger("pypdf")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
