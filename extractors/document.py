"""The records extraction produces: one `Document` made of numbered `Page`s.

Frozen dataclasses with tuples inside, so a document can be passed between stages and
threads without anyone changing it behind another stage's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PageImage:
    """An image of a page without a text layer, kept so a multimodal model can read it."""

    mime: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One page of text. `number` counts from 1, as people cite pages.

    For DOCX, which has no fixed pages, a page is the text between explicit or rendered page
    breaks; when a document has none, `label` says which paragraphs the page holds.
    """

    number: int
    text: str
    image_count: int = 0
    label: str | None = None
    images: tuple[PageImage, ...] = ()

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def needs_ocr(self) -> bool:
        """True for a page that shows something (images) but has no text to read."""
        return not self.text.strip() and self.image_count > 0


@dataclass(frozen=True, slots=True)
class Document:
    """A whole extracted file. `sha256` of the bytes is its identity across renames."""

    path: str
    sha256: str
    kind: str  # "pdf" | "docx" | "text"
    size: int
    pages: tuple[Page, ...]
    extractor_version: str
    title: str | None = None
    author: str | None = None
    created: str | None = None  # ISO 8601 when the file says
    warnings: tuple[str, ...] = field(default=())

    @property
    def chars(self) -> int:
        return sum(p.chars for p in self.pages)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)

    @property
    def scanned_pages(self) -> tuple[int, ...]:
        return tuple(p.number for p in self.pages if p.needs_ocr)
