"""Plain text and Markdown: decode, then cut into ~3000-char pages at paragraph boundaries."""

from __future__ import annotations

import re

from extractors.errors import EmptyDocument, UnsupportedFormat
from extractors.limits import Limits
from extractors.paging import REPLACEMENT, TARGET_CHARS, Extracted, group, number

# Above this share of undecodable bytes the file is not UTF-8: read it as Windows-1252
# (which maps every byte) rather than hand the model a page of replacement characters.
MAX_REPLACEMENT_RATIO = 0.01
_PARAGRAPHS = re.compile(r"\n[ \t]*\n+")


def decode(data: bytes) -> tuple[str, list[str]]:
    """Bytes -> text and warnings. BOMs decide first; then UTF-8; then cp1252 for legacy files."""
    warnings: list[str] = []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), warnings
    text = data.decode("utf-8-sig", errors="replace")
    bad = text.count(REPLACEMENT) - data.count(REPLACEMENT.encode("utf-8"))
    if bad and bad > len(text) * MAX_REPLACEMENT_RATIO:
        warnings.append(f"not UTF-8 ({bad} undecodable bytes): decoded as Windows-1252")
        return data.decode("cp1252", errors="replace"), warnings
    if bad:
        warnings.append(f"{bad} undecodable bytes replaced with U+FFFD")
    return text, warnings


def extract_text(path: str, data: bytes, limits: Limits) -> Extracted:
    """Pages and warnings for a text file already read into `data`."""
    text, warnings = decode(data)
    controls = sum(1 for c in text[:65536] if ord(c) < 32 and c not in "\t\n\r\f")
    if controls > min(len(text), 65536) * 0.05:
        raise UnsupportedFormat(path, "binary data (control characters), not text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p.strip("\n") for p in _PARAGRAPHS.split(text)]
    paragraphs = [p for p in paragraphs if p.strip()]
    # A text without blank lines (a log, a CSV) would be one huge "paragraph": cut it at lines.
    paragraphs = [q for p in paragraphs for q in (p.split("\n") if len(p) > 2 * TARGET_CHARS else (p,))]
    if not paragraphs:
        raise EmptyDocument(path, "text file holds only whitespace")
    pages = number(group(paragraphs, sep="\n\n"))
    limits.check_pages(path, len(pages))
    return Extracted(pages, tuple(warnings))
