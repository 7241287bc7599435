"""Crude, deterministic reading of the input text: markers, sentences, names, dates, amounts, language.

Good enough to make answers that are derived from the input (so citations can be checked end to end),
never meant to be smart. The markup (page, partial and document blocks) is parsed by kimidocs.core.markup,
the module that writes it, so the emulator reads exactly what the pipeline sends, escapes included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kimidocs.core import markup

_IMAGE = re.compile(r"\x00IMG:(\d+)\x00")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_SPACE = re.compile(r"\s+")


@dataclass
class Page:
    number: int
    raw: str  # the page text as sent (image marks removed)
    images: list[int] = field(default_factory=list)  # sizes of the images sent with it
    text: str = ""  # `raw` with whitespace collapsed

    def __post_init__(self) -> None:
        self.text = _SPACE.sub(" ", self.raw).strip()


def parse_pages(text: str) -> list[Page]:
    """Page blocks in order of first appearance; parts of a split page (same N) are joined."""
    pages: dict[int, Page] = {}
    for number, body in markup.parse_pages(text):
        images = [int(s) for s in _IMAGE.findall(body)]
        body = _IMAGE.sub("", body)
        page = pages.get(number)
        if page is None:
            pages[number] = Page(number, body, images)
        else:
            page.raw += "\n" + body
            page.images += images
            page.text = _SPACE.sub(" ", page.raw).strip()
    return list(pages.values())


def parse_partials(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """(first_page, last_page, object) of each partial whose JSON is an object; broken ones are skipped."""
    return markup.parse_partials(text)


def parse_documents(text: str) -> list[tuple[str, str]]:
    return markup.parse_documents(text)


def strip_images(text: str) -> str:
    return _IMAGE.sub("", text)


# ---------------------------------------------------------------------------------------------- sentences


def sentences(text: str) -> list[str]:
    flat = _SPACE.sub(" ", text).strip()
    return [s.strip() for s in _SENTENCE_END.split(flat) if len(s.strip()) >= 3]


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a word boundary, with an ellipsis when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + "…"


def evidence_on(raw: str, limit: int = 80) -> str | None:
    """A short exact substring of the page: the start of its first substantial line."""
    for line in raw.splitlines():
        line = line.strip()
        if sum(ch.isalnum() for ch in line) < 4:
            continue
        if len(line) > limit:
            line = line[:limit]
            line = line.rsplit(" ", 1)[0] if " " in line else line
        while line.endswith("-"):  # a hyphen at a cut would not match the de-hyphenated page
            line = line.rsplit(" ", 1)[0] if " " in line else line.rstrip("-")
        return line.strip() or None
    return None


def first_line(text: str, limit: int = 100) -> str:
    for line in text.splitlines():
        if line.strip():
            return shorten(_SPACE.sub(" ", line), limit)
    return ""


# ---------------------------------------------------------------------------------------------- entities

_WORD = r"(?:[A-Z][a-z][\w'&-]*|[A-Z]{2,6}\b)"
_NAME = re.compile(rf"\b{_WORD}(?:[ \t]+(?:of[ \t]+|&[ \t]+)?{_WORD})*")
_NOT_NAMES = set(
    ["USD", "EUR", "GBP", "CNY", "JPY", "RMB", "CHF", "PDF", "II", "III", "IV", "VI", "VII", "VIII"]
)
_ORG_WORDS = set(
    [
        "inc",
        "inc.",
        "ltd",
        "ltd.",
        "llc",
        "corp",
        "corp.",
        "corporation",
        "company",
        "gmbh",
        "ag",
        "university",
        "institute",
        "bank",
        "association",
        "foundation",
        "agency",
        "department",
        "ministry",
        "council",
        "group",
        "committee",
        "society",
    ]
)
_PLACE_WORDS = set(["street", "avenue", "road", "city", "county", "republic", "kingdom", "states", "island"])
_STOP_FIRST = set(
    [
        "The",
        "A",
        "An",
        "This",
        "That",
        "These",
        "In",
        "On",
        "At",
        "For",
        "And",
        "But",
        "If",
        "It",
        "We",
        "You",
        "He",
        "She",
        "They",
        "I",
        "Our",
        "Page",
        "Chapter",
        "Section",
        "Table",
        "Figure",
    ]
)


def entities(text: str, limit: int) -> list[dict[str, str]]:
    """Capitalised phrases (two words or more) and acronyms, most frequent first."""
    counts: dict[str, int] = {}
    for match in _NAME.finditer(text):
        words = match.group(0).split()
        while words and words[0] in _STOP_FIRST:
            words = words[1:]
        while words and words[-1] in ("of", "&"):
            words = words[:-1]
        if not words:
            continue
        name = " ".join(words)
        if name in _NOT_NAMES or (len(words) == 1 and not (name.isupper() and 2 <= len(name) <= 6)):
            continue
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda n: -counts[n])[:limit]
    return [{"name": n, "type": _entity_type(n)} for n in ranked]


def _entity_type(name: str) -> str:
    lowered = {w.lower() for w in name.split()}
    if lowered & _ORG_WORDS or name.isupper():
        return "organization"
    if lowered & _PLACE_WORDS:
        return "location"
    words = name.split()
    if 2 <= len(words) <= 3 and all(w.isalpha() and w[0].isupper() and w[1:].islower() for w in words):
        return "person"
    return "other"


# ---------------------------------------------------------------------------------------------- dates

_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec"
)
_DATE = re.compile(
    rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b"
    rf"|\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"
    rf"|\b\d{{1,2}} (?:{_MONTHS})\.? \d{{4}}\b"
    rf"|\b(?:{_MONTHS}) \d{{4}}\b"
    r"|\b(?:1[5-9]\d{2}|20\d{2})\b(?![,.]?\d)"
)


def _iso(found: str) -> str:
    text = re.sub(r"(\d)(st|nd|rd|th)", r"\1", found.replace(".", "").replace(",", ""))
    for fmt in ("%Y-%m-%d", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y"):
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return found


def context(text: str, start: int, end: int, limit: int = 60) -> str:
    left = text[max(0, start - limit // 2) : start].split(" ", 1)[-1] if start else ""
    right = text[end : end + limit // 2].rsplit(" ", 1)[0]
    return shorten((left + text[start:end] + right).strip(), limit)


def dates(text: str) -> list[tuple[str, str]]:
    """(date, what) pairs in order; full dates as ISO 8601, the rest as written."""
    flat = _SPACE.sub(" ", text)
    return [(_iso(m.group(0)), context(flat, m.start(), m.end())) for m in _DATE.finditer(flat)]


# ---------------------------------------------------------------------------------------------- amounts

_MULT = r"(?:\s?(?P<mult>million|billion|thousand|bn|m|k)\b)?"
_NUM = r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_AMOUNT = re.compile(
    rf"(?P<sym>[$€£¥])\s?{_NUM}{_MULT}"
    rf"|\b(?P<code>USD|EUR|GBP|CNY|JPY|RMB|CHF)\s?{_NUM.replace('num', 'num2')}"
    rf"{_MULT.replace('mult', 'mult2')}"
)
_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "RMB": "CNY"}
_FACTORS = {"thousand": 1e3, "k": 1e3, "million": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9}


def amounts(text: str) -> list[tuple[float | int, str, str, str]]:
    """(value, currency, as written, what) for money-like strings."""
    flat = _SPACE.sub(" ", text)
    out = []
    for m in _AMOUNT.finditer(flat):
        num = m.group("num") or m.group("num2")
        mult = (m.group("mult") or m.group("mult2") or "").lower()
        value = float(num.replace(",", "")) * _FACTORS.get(mult, 1.0)
        code = m.group("sym") or m.group("code")
        currency = _SYMBOLS.get(code, code)
        number: float | int = int(value) if value.is_integer() else round(value, 2)
        out.append((number, currency, m.group(0), context(flat, m.start(), m.end())))
    return out


# ---------------------------------------------------------------------------------------------- language

_STOPWORDS = {
    "en": {"the", "and", "of", "to", "is", "in", "that", "for"},
    "de": {"der", "die", "und", "das", "ist", "nicht", "mit", "den"},
    "fr": {"le", "la", "les", "et", "des", "est", "une", "dans"},
    "es": {"el", "los", "las", "y", "que", "es", "una", "por"},
}


def language(text: str) -> str:
    sample = text[:20_000]
    if not sample.strip():
        return ""
    counts = {"han": 0, "kana": 0, "hangul": 0, "cyrillic": 0, "arabic": 0}
    for ch in sample:
        code = ord(ch)
        if 0x4E00 <= code <= 0x9FFF:
            counts["han"] += 1
        elif 0x3040 <= code <= 0x30FF:
            counts["kana"] += 1
        elif 0xAC00 <= code <= 0xD7AF:
            counts["hangul"] += 1
        elif 0x0400 <= code <= 0x04FF:
            counts["cyrillic"] += 1
        elif 0x0600 <= code <= 0x06FF:
            counts["arabic"] += 1
    letters = sum(ch.isalpha() for ch in sample) or 1
    if counts["kana"] / letters > 0.05:
        return "ja"
    for script, code in (("han", "zh"), ("hangul", "ko"), ("cyrillic", "ru"), ("arabic", "ar")):  # type: ignore[assignment]
        if counts[script] / letters > 0.2:
            return code  # type: ignore[return-value]
    words = re.findall(r"[a-zà-ÿ]+", sample.lower())
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] else "en"


def document_type(text: str) -> str:
    lowered = text[:5_000].lower()
    for words, kind in (
        (("agreement", "contract", "hereinafter"), "contract"),
        (("invoice",), "invoice"),
        (("abstract",), "paper"),
        (("dear ",), "letter"),
        (("manual", "instructions"), "manual"),
        (("report",), "report"),
        (("chapter",), "book"),
    ):
        if any(w in lowered for w in words):
            return kind
    return "document"
