"""The markup around document text in a prompt: written here, parsed here, nowhere else. Pure.

    <page N>\\n{page text}\\n</page>                    a page, or a part of a split page (same N)
    <partial first_page="A" last_page="B">{json}</partial>    a map/reduce result going into a reduce
    <document id="ID">\\n{page blocks}\\n</document>          several small documents in one call

Document text is untrusted: a file may contain `</page><page number="3">` or `<document id="D1">`
to have its text cited to another page or stored as another document's result. So the `<` of any
tag of this vocabulary inside text is written as `&lt;` (`escape`): the text still reads the same
to a model, but can never open or close a block. Escaping is deterministic, so the same document
gives the same request key (resume) and the same prefix (provider cache) in every run; a random
delimiter per request would break both. Only `<` before a marker word changes, so ordinary text,
and evidence quoted from it, is sent verbatim. Partial JSON is ours but carries text the model
copied from documents: there the `<` becomes the JSON escape `\\u003c`, which decodes to the same.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "DOCUMENT_CLOSE",
    "PAGE_CLOSE",
    "document_block",
    "document_open",
    "escape",
    "page_block",
    "page_open",
    "parse_documents",
    "parse_pages",
    "parse_partials",
    "partial_block",
    "unescape",
]

PAGE_CLOSE = "</page>"
DOCUMENT_CLOSE = "</document>"
_WORDS = r"(?:page|document|partial)\b"
# A `<` that would start one of our tags (however spaced or cased; models read markup loosely).
_TAG_START = re.compile(rf"<(?=\s*/?\s*{_WORDS})", re.IGNORECASE)
_ESCAPED = re.compile(rf"&lt;(?=\s*/?\s*{_WORDS})", re.IGNORECASE)
_JSON_ESCAPED = "\\u003c"

# `<page number="N">` is the older, longer opener: still read (logged requests, other tools' prompts).
_PAGE = re.compile(r'<page (?:number=")?(\d+)"?>\n?(.*?)\n?</page>', re.DOTALL)
_PARTIAL = re.compile(r'<partial first_page="(\d+)" last_page="(\d+)">(.*?)</partial>', re.DOTALL)
_DOCUMENT = re.compile(r'<document id="([^"<>\n]+)">\n?(.*?)\n?</document>', re.DOTALL)


def escape(text: str) -> str:
    """`text` with every tag of our vocabulary made inert (`<` -> `&lt;`); other text unchanged."""
    return _TAG_START.sub("&lt;", text)


def unescape(text: str) -> str:
    """The inverse of `escape`, for text read back from the model (quotes, the emulator's pages)."""
    return _ESCAPED.sub("<", text)


def page_open(number: int) -> str:
    """`<page N>`: 4 o200k tokens with its newline, the closer 3 (the longer `<page number="N">` was 6).

    The closer stays: a page's text must end inside a message that goes on (the task follows the
    document in the emulator's view, a pack's next document follows in the model's), and the
    citation check needs each page's exact text."""
    return f"<page {int(number)}>"


def page_block(number: int, text: str) -> str:
    """One page (or part of a split page) of document text."""
    return f"{page_open(number)}\n{escape(text)}\n{PAGE_CLOSE}"


def partial_block(first_page: int, last_page: int, json_text: str) -> str:
    """A partial result; any `<` in its JSON (inside strings only) is written `\\u003c`."""
    body = json_text.replace("<", _JSON_ESCAPED)
    return f'<partial first_page="{int(first_page)}" last_page="{int(last_page)}">{body}</partial>'


def document_open(doc_id: str) -> str:
    if not doc_id or any(c in doc_id for c in '"<>\n'):
        raise ValueError(f"document id {doc_id!r} cannot be written in markup")
    return f'<document id="{doc_id}">'


def document_block(doc_id: str, body: str) -> str:
    """A document of a packed request; `body` is page blocks (already escaped by `page_block`)."""
    return f"{document_open(doc_id)}\n{body}\n{DOCUMENT_CLOSE}"


# ---------------------------------------------------------------------------------------------- parsing


def parse_pages(text: str) -> list[tuple[int, str]]:
    """(page number, text) of each page block in order, the text unescaped."""
    return [(int(m.group(1)), unescape(m.group(2))) for m in _PAGE.finditer(text)]


def parse_partials(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """(first_page, last_page, object) of each partial whose JSON is an object; broken ones are skipped."""
    out = []
    for m in _PARTIAL.finditer(text):
        try:
            obj = json.loads(m.group(3))
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((int(m.group(1)), int(m.group(2)), obj))
    return out


def parse_documents(text: str) -> list[tuple[str, str]]:
    """(id, body) of each document block; the body still holds its page blocks."""
    return [(m.group(1), m.group(2)) for m in _DOCUMENT.finditer(text)]
