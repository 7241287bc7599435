"""Turning a stream of paragraphs into `Page`s, and making text safe to store.

DOCX and plain text have no pages of their own. We cut them at paragraph boundaries into
pages of about `TARGET_CHARS` (a printed page holds 2-4k characters), so page-aligned
chunking and page citations work the same way as for PDF. Each page's label names the
paragraph range it holds, which is what a reader can find again in the source.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from extractors.document import Page

TARGET_CHARS = 3000
REPLACEMENT = "\ufffd"


_HSPACE_RUN = re.compile(r"[ \t\u00a0]*\t[ \t\u00a0]*| {2,}")


def fold_spaces(text: str) -> str:
    """Tabs and runs of spaces become one space.

    Some PDFs position every word with a tab (The Art of Public Speaking: a tab between most
    words); they carry no meaning in extracted text but cost a third more tokens.
    """
    return _HSPACE_RUN.sub(" ", text)


def clean(text: str) -> str:
    """NFKC-normalise; drop NUL bytes and lone surrogates (both break UTF-8 storage downstream).

    NFKC folds ligatures and presentation forms ("misﬁts" -> "misfits"), so full-text search and
    the evidence check find the words people type.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def group(
    blocks: Iterable[str], *, target: int = TARGET_CHARS, first_block: int = 1, sep: str = "\n"
) -> Iterator[tuple[str, str]]:
    """Yield (text, label) pages of about `target` chars, never splitting a paragraph.

    A single paragraph longer than the target becomes a page of its own (the planner splits
    oversized pages further on sentence boundaries).
    """
    buf: list[str] = []
    size = 0
    start = first_block
    n = first_block - 1
    for n, block in enumerate(blocks, start=first_block):
        if buf and size + len(block) > target:
            yield sep.join(buf), _label(start, n - 1)
            buf, size, start = [], 0, n
        buf.append(block)
        size += len(block) + len(sep)
    if buf:
        yield sep.join(buf), _label(start, n)


def _label(first: int, last: int) -> str:
    return f"paragraph {first}" if first == last else f"paragraphs {first}-{last}"


def number(pages: Iterable[tuple[str, str | None]]) -> tuple[Page, ...]:
    return tuple(Page(i, clean(text), label=label) for i, (text, label) in enumerate(pages, start=1))


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a format reader hands back; `extract()` adds identity (path, sha256, size, kind).
    `engine` names the PDF library that read the text ("pdfium", "pypdf"); "" for other formats."""

    pages: tuple[Page, ...]
    warnings: tuple[str, ...] = ()
    title: str | None = None
    author: str | None = None
    created: str | None = None
    engine: str = ""
