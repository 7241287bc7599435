"""Model output -> validated `Summary`. Pydantic here because this JSON is untrusted.

The schema is the analysts' contract (DESIGN §4 `summaries`): the same field types for every
document, page numbers of the original document on every cited item.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from kimidocs.core import markup, tokens
from kimidocs.core.planning import REPAIR_ERROR_TOKENS, REPAIR_RAW_TOKENS
from kimidocs.core.records import Stage
from kimidocs.core.requests import ChatRequest, followup_request
from prompts import Profile, available_profiles, load_profile


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KeyPoint(_Item):
    point: str
    pages: list[int] = Field(default_factory=list)
    evidence: str | None = None  # a short quote from the cited page, checked when present


class Entity(_Item):
    name: str
    type: str = "other"


class DateItem(_Item):
    date: str  # as written or ISO; the store parses it to DATE where it can
    what: str = ""
    pages: list[int] = Field(default_factory=list)


class Amount(_Item):
    value: str | float | int  # the store coerces to DECIMAL where it can
    currency: str | None = None
    what: str = ""
    pages: list[int] = Field(default_factory=list)


class Summary(_Item):
    """The structured result of the `summary` profile (also the shape of map partials).

    `dropped`: items of the model's answer left out because they could not be read (see `coerce_summary`);
    not part of the JSON, reported by `check_citations`."""

    title: str = ""
    document_type: str = ""
    language: str = ""
    summary: str
    key_points: list[KeyPoint] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    dates: list[DateItem] = Field(default_factory=list)
    amounts: list[Amount] = Field(default_factory=list)
    _dropped: tuple[str, ...] = PrivateAttr(default=())

    @property
    def dropped(self) -> tuple[str, ...]:
        return self._dropped


# ---------------------------------------------------------------------------------------------- parsing


class OutputInvalid(ValueError):
    """Model output that is not a JSON object of the expected shape. Keeps the raw text for debugging."""

    def __init__(self, error: str, raw: str) -> None:
        super().__init__(error)
        self.error = error
        self.raw = raw

    def __str__(self) -> str:
        return f"invalid model output: {self.error}"


_MAX_STARTS = 20
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
# Reasoning models served by OpenAI-compatible servers (Qwen3, DeepSeek-R1 distills) often put their
# thinking in the content, braces included: it is not the answer.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def extract_json_object(content: str) -> dict[str, Any]:
    """The first JSON object in `content`: tolerates ```json fences```, text before or after it, trailing
    commas and a <think>...</think> block before the answer."""
    if content is None or not content.strip():
        raise OutputInvalid("empty output", content or "")
    answer = _THINK.sub("", content)
    if not answer.strip():
        raise OutputInvalid("empty output (only <think> text)", content)
    candidates = [m.group(1) for m in _FENCE.finditer(answer)] + [answer]
    decoder = json.JSONDecoder()
    first_error = None
    for text in candidates:
        start = text.find("{")
        for _ in range(_MAX_STARTS):  # bounded: a long non-JSON reply must not cost O(n^2)
            if start == -1:
                break
            try:
                obj, _end = decoder.raw_decode(text, start)
            except json.JSONDecodeError as err:
                first_error = (
                    first_error or f"JSON decode error: {err.msg} at line {err.lineno} column {err.colno}"
                )
                obj = _without_trailing_commas(decoder, text[start:])
            if isinstance(obj, dict):
                return obj
            start = text.find("{", start + 1)
    raise OutputInvalid(first_error or "no JSON object found", content)


def _without_trailing_commas(decoder: json.JSONDecoder, text: str) -> Any:
    """The value at the start of `text` read again without trailing commas (`[1, 2,]`, `{"a": 1,}`, as
    small models write), or None. Tried at the same start, so the outer object wins over an inner one."""
    if not _TRAILING_COMMA.search(text):
        return None
    try:
        return decoder.raw_decode(_TRAILING_COMMA.sub(r"\1", text))[0]
    except json.JSONDecodeError:
        return None


def validation_message(err: ValidationError) -> str:
    """The first eight problems of a failed validation, for the repair prompt and the error."""
    parts = []
    for e in err.errors()[:8]:
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        parts.append(f"{loc}: {e['msg']}")
    more = f" (+{err.error_count() - 8} more)" if err.error_count() > 8 else ""
    return "schema validation failed: " + "; ".join(parts) + more


# What real models write instead of the schema, read rather than failed (a whole document is not lost for
# one bad item): a list given as one string or one object, items given as bare strings, pages given as
# "3", "p. 3-4" or 3, text fields given as lists or numbers, the object wrapped in {"result": {...}}.
_ITEMS: dict[str, tuple[type[_Item], str]] = {
    "key_points": (KeyPoint, "point"),
    "entities": (Entity, "name"),
    "dates": (DateItem, "date"),
    "amounts": (Amount, "value"),
}
_TEXT_FIELDS = ("title", "document_type", "language", "summary")
_PAGE_RANGE = re.compile(r"(\d+)\s*[-–]\s*(\d+)|(\d+)")
_MAX_RANGE = 50  # "1-999" is not a citation


def _pages(value: Any) -> tuple[list[int], list[Any]]:
    """Page numbers from what models write: 3, "3", "p. 3", "3-5", "3, 7", [3, "4"]; and what could not be
    read as one (dropped). Pages outside the document are `check_citations`' business."""
    if value is None:
        return [], []
    if isinstance(value, list):
        pages: list[int] = []
        bad: list[Any] = []
        for v in value:
            good, wrong = _pages(v) if not isinstance(v, list | dict) else ([], [v])
            pages += good
            bad += wrong
        return pages, bad
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return [int(value)], []
    if isinstance(value, str):
        out: list[int] = []
        for m in _PAGE_RANGE.finditer(value):
            if m.group(3):
                out.append(int(m.group(3)))
            else:
                a, b = int(m.group(1)), int(m.group(2))
                out += list(range(a, b + 1)) if 0 <= b - a < _MAX_RANGE else [a, b]
        return (out, []) if out else ([], [value])
    return [], [value]


def _text(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value if v.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """`{"result": {...the summary...}}` or `{"summary": {...the summary...}}` -> the inner object."""
    if isinstance(obj.get("summary"), str):
        return obj
    inner = [v for v in obj.values() if isinstance(v, dict) and "summary" in v]
    return inner[0] if len(inner) == 1 and len(obj) <= 2 else obj


def coerce_summary(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`obj` shaped for `Summary`, and what was dropped: each list item that cannot be read is left out
    with a reason ("key_points[2]: point: Field required"), the rest kept. Missing `summary` and other
    whole-object faults are left for validation (then the repair call)."""
    obj = _unwrap(obj)
    out = dict(obj)
    dropped: list[str] = []
    for name in _TEXT_FIELDS:
        if name in out:
            out[name] = _text(out[name])
            if out[name] is None and name != "summary":
                out[name] = ""
    for name, (model, main) in _ITEMS.items():
        value = out.get(name)
        if value is None:
            out.pop(name, None)
            continue
        if isinstance(value, str | dict):
            value = [value]
        if not isinstance(value, list):
            dropped.append(f"{name}: not a list ({type(value).__name__})")
            out[name] = []
            continue
        kept = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                item = {main: item}
            if not isinstance(item, dict):
                dropped.append(f"{name}[{i}]: not an object ({type(item).__name__})")
                continue
            item = {
                k: v if k in ("value", "pages") else _text(v)
                for k, v in item.items()
                if not (v is None and k in ("type", "what"))  # null where a default exists
            }
            if "pages" in item:
                item["pages"], bad = _pages(item["pages"])
                if bad:
                    dropped.append(f"{name}[{i}].pages: unreadable {', '.join(map(repr, bad))[:60]}")
            try:
                kept.append(model.model_validate(item))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "(item)"
                dropped.append(f"{name}[{i}]: {where}: {first['msg']}")
        out[name] = kept
    return out, dropped


def _summary_of(obj: dict[str, Any], content: str, where: str = "") -> Summary:
    data, dropped = coerce_summary(obj)
    try:
        summary = Summary.model_validate(data)
    except ValidationError as err:
        raise OutputInvalid(where + validation_message(err), content) from None
    summary._dropped = tuple(dropped)
    return summary


def parse_summary(content: str) -> Summary:
    """`content` as a validated `Summary`; raises `OutputInvalid(error, raw)` saying what is wrong.

    Unreadable list items are dropped, not fatal (`Summary.dropped` says which); the object as a whole
    (no JSON, no `summary` text) is what fails, and then the caller makes its one repair call."""
    return _summary_of(extract_json_object(content), content)


def parse_packed(content: str, doc_ids: Sequence[str]) -> dict[str, Summary | OutputInvalid]:
    """The answer to a packed request, per document id: a Summary, or why that document's part is unusable."""
    try:
        obj = extract_json_object(content)
    except OutputInvalid as err:
        return dict.fromkeys(doc_ids, err)
    docs = obj.get("documents")
    if not isinstance(docs, dict):
        shape = OutputInvalid('expected {"documents": {"ID": {...}}}', content)
        return dict.fromkeys(doc_ids, shape)
    out: dict[str, Summary | OutputInvalid] = {}
    for doc_id in doc_ids:
        item = docs.get(doc_id)
        if not isinstance(item, dict):
            out[doc_id] = OutputInvalid(f"no object for document {doc_id!r}", content)
            continue
        try:
            out[doc_id] = _summary_of(item, content, f"document {doc_id!r}: ")
        except OutputInvalid as err:
            out[doc_id] = err
    return out


def check_packed_part(
    part: Summary | OutputInvalid, pages: Mapping[int, str], label: str
) -> Summary | OutputInvalid:
    """A packed answer's part for one document, kept only if every quote in it is that document's text.

    Several documents share the prompt, so a part may describe the wrong one (ids confused by the
    model, or text made to look like another document's block). A quote found in none of the
    document's pages means the part is not about it: the document is then read alone.
    """
    if not isinstance(part, Summary):
        return part
    text = normalize_for_match(" ".join(pages[p] for p in sorted(pages)))
    for item in part.key_points:
        needle = normalize_for_match(markup.unescape(item.evidence or "")).strip(" .\"'…")
        if needle and needle not in text:
            return OutputInvalid(
                f"document {label!r}: quotes text that is not in it ({needle[:60]!r})",
                summary_json(part),
            )
    return part


def unusable_reason(stage: Stage | str, content: str | None, finish_reason: str | None) -> str | None:
    """Why an answer can never be a result (cut at max_tokens, no valid JSON of the stage's shape),
    or None when it can. Such a call is logged `unusable`: billed, but never reused by request key,
    so a rerun after the fault is gone asks again instead of failing the same way."""
    if finish_reason == "length":
        return "output cut at max_tokens (finish_reason=length)"
    try:
        if stage != Stage.PACK:
            parse_summary(content or "")
            return None
        docs = extract_json_object(content or "").get("documents")
        labels = list(docs) if isinstance(docs, dict) else []
        if not any(isinstance(p, Summary) for p in parse_packed(content or "", labels).values()):
            return 'no usable {"documents": {"ID": {...}}} part'
    except OutputInvalid as err:
        return err.error
    return None


def json_unusable_reason(stage: Stage | str, content: str | None, finish_reason: str | None) -> str | None:
    """`unusable_reason` for answers of any schema (declared profiles): cut at max_tokens, or no JSON
    object at all. Their schema is checked by map-reduce, which repairs what does not validate."""
    if finish_reason == "length":
        return "output cut at max_tokens (finish_reason=length)"
    try:
        extract_json_object(content or "")
    except OutputInvalid as err:
        return err.error
    return None


def summary_json(summary: Summary) -> str:
    """Compact JSON of a summary (what a reduce call reads and what the store keeps as raw)."""
    return summary.model_dump_json(exclude_none=True)


def repair_request(
    original: ChatRequest, raw: str, error: str, *, profile: Profile | None = None
) -> ChatRequest:
    """The one repair call: the same request, the bad answer (cut short) and the error, stage "repair".

    The document prefix is unchanged, so the repair reads it from the cache; the excerpt and the error
    are cut to the sizes planning reserved room for (REPAIR_RAW_TOKENS, REPAIR_ERROR_TOKENS). The
    repair text is the profile's repair.md (found from the request's system message when not given).
    """
    profile = profile or _profile_of(original)
    excerpt = _truncate_tokens(raw or "(empty)", REPAIR_RAW_TOKENS)
    text = profile.task("repair", error=_truncate_tokens(error, REPAIR_ERROR_TOKENS))
    extra = [{"role": "assistant", "content": excerpt}, {"role": "user", "content": text}]
    extra_tokens = tokens.count(excerpt) + tokens.count(text) + 2 * tokens.MESSAGE_OVERHEAD
    return followup_request(original, extra, extra_tokens, stage=Stage.REPAIR)


def _profile_of(request: ChatRequest) -> Profile:
    """The profile whose system message the request carries (the default profile otherwise)."""
    system = request.body["messages"][0]["content"]
    for name in available_profiles():
        profile = load_profile(name)
        if profile.system == system:
            return profile
    return load_profile()


def _truncate_tokens(text: str, limit: int) -> str:
    ids = tokens.encoding().encode_ordinary(text)
    if len(ids) <= limit:
        return text
    return tokens.encoding().decode(ids[:limit]) + " …"


# ---------------------------------------------------------------------------------------------- citations


@dataclass(frozen=True, slots=True)
class CitationReport:
    """What checking citations found. A dropped page was cited but does not exist or is out of range;
    dropped evidence was quoted but not found on any cited page, and its whole item went with it."""

    items: int = 0
    pages_cited: int = 0
    pages_dropped: int = 0
    evidence_checked: int = 0
    evidence_dropped: int = 0
    items_uncited: int = 0  # items left with no valid page
    bad_pages: tuple[int, ...] = ()
    malformed: tuple[str, ...] = ()  # items the answer could not be read for (`Summary.dropped`)

    @property
    def dropped(self) -> int:
        return self.pages_dropped + self.evidence_dropped + len(self.malformed)

    def describe(self) -> str:
        bits = [f"{self.pages_dropped} of {self.pages_cited} cited pages dropped"]
        if self.bad_pages:
            bits.append(f"(pages {', '.join(map(str, self.bad_pages[:10]))})")
        bits.append(
            f"{self.evidence_dropped} of {self.evidence_checked} quoted items dropped"
            " (quote not on a cited page)"
        )
        if self.malformed:
            shown = "; ".join(self.malformed[:5]) + (" ..." if len(self.malformed) > 5 else "")
            bits.append(f"; {len(self.malformed)} unreadable items dropped ({shown})")
        return "citations: " + " ".join(bits)


_SPACE = re.compile(r"\s+")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "\u00ad": None, "\u00a0": " "})


def normalize_for_match(text: str) -> str:
    """Lower-case, NFKC, plain quotes, no soft hyphens, words re-joined across line-end hyphens,
    whitespace collapsed: how evidence and pages are compared."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)
    return _SPACE.sub(" ", text).strip()


class CitationChecker:
    """The one check of cited items (anything with `pages`, maybe `evidence`) against the pages a call
    read, counting what it drops: a page that does not exist or was not read goes; a quote found on none
    of the item's valid pages (nor across two consecutive ones) drops the whole item. Used for summaries
    here and for every cited field of declared profiles (`profiles.validate`)."""

    def __init__(self, pages: Mapping[int, str], allowed: range | set[int] | frozenset[int]) -> None:
        self.pages = pages
        self.allowed = allowed
        self.counts = dict.fromkeys(("items", "cited", "dropped", "ev_checked", "ev_dropped", "uncited"), 0)
        self.bad: set[int] = set()
        self._norm: dict[int, str] = {}

    def _normalized(self, page: int) -> str:
        if page not in self._norm:
            self._norm[page] = normalize_for_match(self.pages.get(page, ""))
        return self._norm[page]

    def fix(self, item: Any) -> Any:
        """`item` with its bad pages removed, or None when its quote is not on its pages."""
        counts = self.counts
        counts["items"] += 1
        good: list[int] = []
        for p in item.pages:
            counts["cited"] += 1
            if p in self.pages and p in self.allowed:
                if p not in good:
                    good.append(p)
            else:
                counts["dropped"] += 1
                self.bad.add(p)
        evidence = getattr(item, "evidence", None)
        if evidence:
            counts["ev_checked"] += 1
            needle = normalize_for_match(markup.unescape(evidence)).strip(" .\"'…")
            norm = self._normalized
            hay = [norm(p) for p in good] + [norm(a) + " " + norm(b) for a, b in itertools.pairwise(good)]
            if needle and not any(needle in h for h in hay):
                counts["ev_dropped"] += 1
                return None
        if not good:
            counts["uncited"] += 1
        return item.model_copy(update={"pages": good})

    def report(self, malformed: tuple[str, ...] = ()) -> CitationReport:
        c = self.counts
        return CitationReport(
            items=c["items"],
            pages_cited=c["cited"],
            pages_dropped=c["dropped"],
            evidence_checked=c["ev_checked"],
            evidence_dropped=c["ev_dropped"],
            items_uncited=c["uncited"],
            bad_pages=tuple(sorted(self.bad)),
            malformed=malformed,
        )


def check_citations(
    summary: Summary, pages: Mapping[int, str], allowed: range | set[int] | frozenset[int]
) -> tuple[Summary, CitationReport]:
    """`summary` with bad citations removed, and a report of what was removed.

    A cited page must exist in `pages` and be in `allowed` (the pages the call read); evidence, where
    given, must occur (normalised) on one of the item's valid pages, or across two consecutive ones.
    An item whose quote is not there is dropped whole: its text came from somewhere else (another
    page, another document, text made to look like our markup), so its point, date or pages cannot
    be trusted either. Items without a quote are kept even when all their pages go: the point may be
    right, only its citation is not.
    """
    checker = CitationChecker(pages, allowed)

    def fix_list(items: list[Any]) -> list[Any]:
        return [fixed for item in items if (fixed := checker.fix(item)) is not None]

    fixed = summary.model_copy(
        update={
            "key_points": fix_list(summary.key_points),
            "dates": fix_list(summary.dates),
            "amounts": fix_list(summary.amounts),
        }
    )
    report = checker.report(malformed=summary.dropped)
    fixed._dropped = summary.dropped
    return fixed, report


# ---------------------------------------------------------------------------------------------- merging


def merge_summaries(parts: Sequence[Summary], *, max_key_points: int = 24) -> Summary:
    """A deterministic merge of partials, used when a reduce call fails: nothing cited is lost.

    Summaries are joined, lists concatenated in page order with exact duplicates removed, the first
    non-empty title/type/language wins.
    """

    def first(attr: str) -> str:
        return next((getattr(p, attr) for p in parts if getattr(p, attr)), "")

    def dedupe(items: list[Any], key: Any) -> list[Any]:
        seen, out = set(), []
        for item in items:
            k = key(item)
            if k not in seen:
                seen.add(k)
                out.append(item)
        return out

    key_points = dedupe([k for p in parts for k in p.key_points], lambda k: normalize_for_match(k.point))
    return Summary(
        title=first("title"),
        document_type=first("document_type"),
        language=first("language"),
        summary=" ".join(p.summary.strip() for p in parts if p.summary.strip()),
        key_points=key_points[:max_key_points],
        entities=dedupe([e for p in parts for e in p.entities], lambda e: (e.name.casefold(), e.type)),
        dates=dedupe([d for p in parts for d in p.dates], lambda d: (d.date, d.what, tuple(d.pages))),
        amounts=dedupe([a for p in parts for a in p.amounts], lambda a: (str(a.value), a.currency, a.what)),
    )
