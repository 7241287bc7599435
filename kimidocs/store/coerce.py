"""Model output -> column types that never drift: DATE for dates, DECIMAL(38,4) for amounts.

Pure functions, no duckdb. The model writes dates and amounts the way the document does
("January 5, 2020", "$1,200.50", "USD 5 million", "€3,5"); analysts need one type per column.
Each coercion returns the typed value (or None when it cannot be read without guessing) and
the store always keeps the original text beside it (`date_text`, `value_text`), so nothing is
lost. What could not be read is counted in `summaries.coercion_warnings`.

Decisions (documented in docs/SCHEMA.md):
- Partial dates are stored as the first day of the period with `precision` = month | year
  ("2020-01" -> 2020-01-01, month; "2020" -> 2020-01-01, year).
- All-numeric day/month orders are read only when they cannot be misread: "13/01/2020" is
  13 January, "01/13/2020" is 13 January, "01/02/2020" is ambiguous -> NULL. Dotted dates
  ("05.01.2020") follow the European day.month.year convention.
- One number per amount: "5-10 million" or "3 x $5" -> NULL (a range is not a value).
- A lone comma followed by exactly three digits is a thousands separator ("1,234" -> 1234),
  otherwise a decimal comma ("3,5" -> 3.5); "1.234,56" and "1,234.56" both -> 1234.56.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from kimidocs.core.paths import shown

MAX_DECIMAL = Decimal(10) ** 34  # DECIMAL(38,4): 34 digits before the point
FOUR_PLACES = Decimal("0.0001")
# Python's default context keeps 28 digits: quantizing 1e24 to 4 places (29 digits) would raise.
_DECIMAL_38 = Context(prec=38)
INT32_MAX = 2**31 - 1


def clean_text(value: str | None) -> str | None:
    """Text DuckDB accepts: no NUL bytes, and lone surrogates (JSON `\\ud800`, the bytes of a
    non-UTF-8 file name in a message) written as escapes, as `kimidocs.core.paths.shown` does."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    return shown(value)


def clean_pages(pages: list[int] | tuple[int, ...]) -> tuple[list[int], bool]:
    """Page numbers that fit INTEGER and can be pages (>= 1); True when some were dropped."""
    kept = [p for p in pages if isinstance(p, int) and 1 <= p <= INT32_MAX]
    return kept, len(kept) != len(pages)


# ---------------------------------------------------------------- dates


@dataclass(frozen=True, slots=True)
class ParsedDate:
    value: date | None
    precision: str | None  # day | month | year, None when unparsed


_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))

_ISO_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$", re.I
)
_YMD = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_YM = re.compile(r"^(\d{4})[-/](\d{1,2})$")
_Y = re.compile(r"^(\d{4})$")
_DMY_DOTS = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_NUMERIC_DMY = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})$")
_MDY_WORDS = re.compile(rf"^({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})$")
_DMY_WORDS = re.compile(rf"^(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})$")
_MY_WORDS = re.compile(rf"^({_MONTH_RE})\.?,?\s+(\d{{4}})$")
_CJK = re.compile(r"^(\d{4})年(\d{1,2})月(?:(\d{1,2})日)?$")


def _make(y: int, m: int, d: int, precision: str) -> ParsedDate:
    try:
        return ParsedDate(date(y, m, d), precision)
    except ValueError:
        return ParsedDate(None, None)


def parse_date(text: str) -> ParsedDate:
    """A date as written -> (DATE, precision), or (None, None) when unreadable or ambiguous."""
    s = " ".join(unicodedata.normalize("NFKC", text).strip().split()).lower()
    if not s:
        return ParsedDate(None, None)
    if m := _ISO_DATETIME.match(s) or _YMD.match(s):
        return _make(int(m[1]), int(m[2]), int(m[3]), "day")
    if m := _YM.match(s):
        return _make(int(m[1]), int(m[2]), 1, "month")
    if m := _Y.match(s):
        return _make(int(m[1]), 1, 1, "year")
    if m := _DMY_DOTS.match(s):
        return _make(int(m[3]), int(m[2]), int(m[1]), "day")
    if m := _NUMERIC_DMY.match(s):
        a, b, y = int(m[1]), int(m[2]), int(m[3])
        if a > 12 >= b:
            return _make(y, b, a, "day")
        if b > 12 >= a:
            return _make(y, a, b, "day")
        if a == b:
            return _make(y, a, b, "day")
        return ParsedDate(None, None)
    if m := _MDY_WORDS.match(s):
        return _make(int(m[3]), _MONTHS[m[1]], int(m[2]), "day")
    if m := _DMY_WORDS.match(s):
        return _make(int(m[3]), _MONTHS[m[2]], int(m[1]), "day")
    if m := _MY_WORDS.match(s):
        return _make(int(m[2]), _MONTHS[m[1]], 1, "month")
    if m := _CJK.match(s):
        if m[3]:
            return _make(int(m[1]), int(m[2]), int(m[3]), "day")
        return _make(int(m[1]), int(m[2]), 1, "month")
    return ParsedDate(None, None)


# ---------------------------------------------------------------- amounts


@dataclass(frozen=True, slots=True)
class ParsedAmount:
    value: Decimal | None
    currency: str | None


_SYMBOLS = {
    "us$": "USD",
    "$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "CNY",
    "￥": "CNY",
    "元": "CNY",
    "rmb": "CNY",
    "₹": "INR",
    "₩": "KRW",
    "₽": "RUB",
    "₺": "TRY",
    "₪": "ILS",
    "฿": "THB",
    "r$": "BRL",
    "%": "%",
}
_CURRENCY_WORDS = {
    "dollar": "USD",
    "dollars": "USD",
    "euro": "EUR",
    "euros": "EUR",
    "pound": "GBP",
    "pounds": "GBP",
    "yuan": "CNY",
    "yen": "JPY",
    "percent": "%",
}
_MULTIPLIERS = {
    "k": 10**3,
    "thousand": 10**3,
    "m": 10**6,
    "mn": 10**6,
    "mm": 10**6,
    "mio": 10**6,
    "million": 10**6,
    "millions": 10**6,
    "b": 10**9,
    "bn": 10**9,
    "billion": 10**9,
    "billions": 10**9,
    "t": 10**12,
    "tn": 10**12,
    "trillion": 10**12,
    "万": 10**4,
    "亿": 10**8,
}
_NUMBER = re.compile(r"\d[\d,.' \u00a0\u202f]*\d|\d")
_WORD = re.compile(r"[a-z]+|[万亿元]")


def normalize_currency(text: str | None) -> str | None:
    """'usd', '$', 'US$', 'euros' -> ISO-like code; unknown text kept upper-cased and trimmed."""
    if text is None:
        return None
    s = unicodedata.normalize("NFKC", text).strip()
    if not s:
        return None
    low = s.lower()
    if low in _SYMBOLS:
        return _SYMBOLS[low]
    if low in _CURRENCY_WORDS:
        return _CURRENCY_WORDS[low]
    return s.upper()[:16]


def _number(token: str) -> Decimal | None:
    """'1,200.50' / '1.200,50' / '3,5' / '1 234' -> Decimal."""
    t = re.sub(r"['\s\u00a0\u202f]", "", token)
    commas, dots = t.count(","), t.count(".")
    if commas and dots:
        decimal_mark = "," if t.rfind(",") > t.rfind(".") else "."
        thousands = "." if decimal_mark == "," else ","
        t = t.replace(thousands, "")
        if t.count(decimal_mark) > 1:
            return None
        t = t.replace(",", ".")
    elif commas:
        parts = t.split(",")
        if commas > 1 or len(parts[1]) == 3:
            if any(len(p) != 3 for p in parts[1:]):
                return None
            t = t.replace(",", "")
        else:
            t = t.replace(",", ".")
    elif dots > 1:
        parts = t.split(".")
        if any(len(p) != 3 for p in parts[1:]):
            return None
        t = t.replace(".", "")
    try:
        return Decimal(t)
    except InvalidOperation:
        return None


def _fit(value: Decimal) -> Decimal | None:
    """Round to 4 places; None when it does not fit DECIMAL(38,4)."""
    if not value.is_finite() or value.copy_abs() >= MAX_DECIMAL:  # abs() would round to 28 digits
        return None
    try:
        return value.quantize(FOUR_PLACES, rounding=ROUND_HALF_EVEN, context=_DECIMAL_38)
    except InvalidOperation:  # rounding carried it to 10**34: 39 digits
        return None


def parse_amount(value: str | float | int, currency: str | None = None) -> ParsedAmount:
    """An amount as the model gave it -> (DECIMAL value, currency code), None where unreadable.

    An explicit `currency` field wins over a symbol found in the text.
    """
    explicit = normalize_currency(currency)
    if isinstance(value, bool):
        return ParsedAmount(None, explicit)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return ParsedAmount(None, explicit)
        return ParsedAmount(_fit(Decimal(str(value))), explicit)
    s = unicodedata.normalize("NFKC", value).strip().lower()
    numbers = _NUMBER.findall(s)
    if len(numbers) != 1:
        return ParsedAmount(None, explicit or _currency_in(s))
    token = numbers[0]
    number = _number(token)
    if number is None:
        return ParsedAmount(None, explicit or _currency_in(s))
    before, after = s.split(token, 1)
    negative = bool(re.search(r"[-−–]\s*\S{0,4}$", before)) or ("(" in before and ")" in after)
    word = _WORD.match(after.lstrip())
    if word and word[0] in _MULTIPLIERS:
        number *= _MULTIPLIERS[word[0]]
    if negative:
        number = -number
    return ParsedAmount(_fit(number), explicit or _currency_in(s))


def _currency_in(s: str) -> str | None:
    """The currency a text names: a symbol, a 3-letter code or a currency word."""
    for symbol in sorted(_SYMBOLS, key=len, reverse=True):
        if not symbol.isalpha() and symbol in s:
            return _SYMBOLS[symbol]
    for word in re.findall(r"[a-z]+|元", s):
        if word in _SYMBOLS:
            return _SYMBOLS[word]
        if word in _CURRENCY_WORDS:
            return _CURRENCY_WORDS[word]
        if word in _ISO_CODES:
            return word.upper()
    return None


# Codes we recognise inside free text (a fixed list, so "the" or "per" never read as a currency).
_ISO_CODES = frozenset(
    re.findall(
        r"[a-z]{3}",
        "usd eur gbp cny jpy inr krw rub try ils thb brl chf cad aud nzd hkd sgd sek nok dkk pln czk huf "
        "mxn zar aed sar twd idr myr php vnd ngn egp kes ars clp cop pen",
    )
)


def to_datetime(value: datetime | None) -> datetime | None:
    """Aware datetimes -> naive UTC (the store keeps every TIMESTAMP in UTC)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
