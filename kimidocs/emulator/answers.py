"""Deterministic answers derived from the input: Summary-shaped JSON (single/map, reduce, packed), an
object for any other JSON schema, tool-call arguments, or plain text.

Answers are built at decreasing sizes until one fits the request's `max_tokens` (a real model does not
know its budget, but answers that overflow at random would make every pipeline test flaky); only when the
smallest still does not fit is the content cut at `max_tokens`, with finish_reason "length".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kimidocs.core import markup, tokens
from kimidocs.emulator import extract
from kimidocs.emulator.extract import Page

# (key points, entities, dates, amounts, point chars, summary chars), largest first.
MAP_SIZES = (
    (5, 8, 8, 8, 200, 320),
    (4, 5, 5, 5, 140, 220),
    (3, 3, 3, 3, 100, 160),
    (2, 2, 2, 2, 80, 120),
    (1, 0, 0, 0, 60, 80),
)
REDUCE_SIZES = (
    (12, 20, 20, 20, 200, 600),
    (8, 10, 10, 10, 160, 400),
    (5, 5, 5, 5, 120, 240),
    (3, 2, 2, 2, 80, 140),
    (1, 0, 0, 0, 60, 80),
)


@dataclass(frozen=True, slots=True)
class Size:
    points: int
    entities: int
    dates: int
    amounts: int
    point_chars: int
    summary_chars: int


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def spread(items: list[Any], k: int) -> list[Any]:
    """Up to `k` items: the first, the last and evenly between."""
    if len(items) <= k:
        return list(items)
    if k <= 1:
        return items[:k]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _covers(first: int | None, last: int | None) -> str:
    if first is None:
        return ""
    return f" Covers page {first}." if first == last else f" Covers pages {first}-{last}."


# ---------------------------------------------------------------------------------------------- summaries


def summarizer(pages: list[Page]) -> Callable[[Size], dict[str, Any]]:
    """Summary-shaped objects for page blocks (a single call or a map chunk), at any size.

    The scans over the text (dates, amounts, names) run once; each size only renders.
    """
    flat = " ".join(p.text for p in pages if p.text)
    numbers = [p.number for p in pages]
    first, last = (min(numbers), max(numbers)) if numbers else (None, None)
    dates: dict[str, dict[str, Any]] = {}
    amounts: dict[tuple[str, str], dict[str, Any]] = {}
    for page in pages:
        for date, what in extract.dates(page.text):
            item = dates.setdefault(date, {"date": date, "what": what, "pages": []})
            if page.number not in item["pages"] and numbers:
                item["pages"].append(page.number)
        for value, currency, _written, what in extract.amounts(page.text):
            key = (str(value), currency)
            item = amounts.setdefault(key, {"value": value, "currency": currency, "what": what, "pages": []})
            if page.number not in item["pages"] and numbers:
                item["pages"].append(page.number)
    names = extract.entities(flat, max(s[1] for s in MAP_SIZES))
    opening = extract.sentences(flat[:4_000])[:2]
    scanned = sum(len(p.images) for p in pages)
    summary = (
        " ".join(opening) if opening else (f"{scanned} scanned page image(s)." if scanned else "No text.")
    )
    head = {
        "title": extract.first_line(next((p.raw for p in pages if p.text), "")),
        "document_type": extract.document_type(flat),
        "language": extract.language(flat),
    }
    candidates = [p for p in pages if p.text or p.images]

    def key_point(page: Page, size: Size) -> dict[str, Any]:
        cited = [page.number] if numbers else []
        if not page.text:
            return {"point": f"Scanned page {page.number}: image of {sum(page.images)} bytes", "pages": cited}
        sentence = next(iter(extract.sentences(page.text[:2_000])), page.text)
        point: dict[str, Any] = {"point": extract.shorten(sentence, size.point_chars), "pages": cited}
        evidence = extract.evidence_on(page.raw)
        if evidence:
            point["evidence"] = evidence
        return point

    def render(size: Size) -> dict[str, Any]:
        return {
            **head,
            "summary": extract.shorten(summary, size.summary_chars) + _covers(first, last),
            "key_points": [key_point(p, size) for p in spread(candidates, size.points)],
            "entities": names[: size.entities],
            "dates": list(dates.values())[: size.dates],
            "amounts": list(amounts.values())[: size.amounts],
        }

    return render


def summarize_pages(pages: list[Page], size: Size) -> dict[str, Any]:
    """One Summary-shaped object for page blocks."""
    return summarizer(pages)(size)


def _strip_covers(text: str) -> str:
    return " ".join(s for s in extract.sentences(text) if not s.startswith("Covers page"))


def reduce_partials(partials: list[tuple[int, int, dict[str, Any]]], size: Size) -> dict[str, Any]:
    """Merge partial results: key points keep their pages, lists are united, the summary is shortened."""

    def first_text(key: str) -> str:
        return next((str(o[key]) for _, _, o in partials if isinstance(o.get(key), str) and o[key]), "")

    def items(key: str) -> Iterator[dict[str, Any]]:
        for _, _, obj in partials:
            for item in obj.get(key) or []:
                if isinstance(item, dict):
                    yield item

    key_points = [k for k in items("key_points") if isinstance(k.get("point"), str)]
    entities: dict[str, dict[str, Any]] = {}
    for e in items("entities"):
        if isinstance(e.get("name"), str):
            entities.setdefault(e["name"].casefold(), {"name": e["name"], "type": e.get("type") or "other"})
    dates: dict[str, dict[str, Any]] = {}
    for d in items("dates"):
        if isinstance(d.get("date"), str):
            merged = dates.setdefault(
                d["date"], {"date": d["date"], "what": d.get("what") or "", "pages": []}
            )
            merged["pages"] += [p for p in d.get("pages") or [] if p not in merged["pages"]]
    amounts: dict[tuple[str, str], dict[str, Any]] = {}
    for a in items("amounts"):
        if "value" in a:
            key = (str(a["value"]), str(a.get("currency")))
            merged = amounts.setdefault(key, {**a, "pages": []})
            merged["pages"] += [p for p in a.get("pages") or [] if p not in merged["pages"]]
    firsts = [extract.sentences(_strip_covers(str(o.get("summary") or "")))[:1] for _, _, o in partials]
    summary = " ".join(s[0] for s in firsts if s) or "Merged summary."
    first = min((a for a, _, _ in partials), default=None)
    last = max((b for _, b, _ in partials), default=None)
    return {
        "title": first_text("title"),
        "document_type": first_text("document_type"),
        "language": first_text("language"),
        "summary": extract.shorten(summary, size.summary_chars) + _covers(first, last),
        "key_points": [
            {**k, "point": extract.shorten(k["point"], size.point_chars)}
            for k in spread(key_points, size.points)
        ],
        "entities": list(entities.values())[: size.entities],
        "dates": list(dates.values())[: size.dates],
        "amounts": list(amounts.values())[: size.amounts],
    }


# ---------------------------------------------------------------------------------------------- schemas


def find_schema(system: str) -> dict[str, Any] | None:
    """The output JSON Schema the system prompt shows: in a ```json fence, or as an inline object."""
    decoder = json.JSONDecoder()
    fence = system.find("```json")
    starts = [system.find("{", fence)] if fence != -1 else []
    start = system.find("{")
    for _ in range(50):
        if start == -1:
            break
        starts.append(start)
        start = system.find("{", start + 1)
    for start in starts:
        if start == -1:
            continue
        try:
            obj, _ = decoder.raw_decode(system, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("properties"), dict):
            return obj
    return None


def is_summary_schema(schema: dict[str, Any]) -> bool:
    props = schema.get("properties") or {}
    return "summary" in props and "key_points" in props


@dataclass(frozen=True, slots=True)
class Facts:
    """What generic schema filling may use: texts and numbers from the input. `per_page` holds the
    facts of single pages: the items of a cited list come from different pages (up to 3, spread)."""

    sentence: str
    title: str
    language: str
    first_page: int | None
    date: str | None
    amount: tuple[float | int, str] | None = None
    evidence: str | None = None
    per_page: tuple[Facts, ...] = ()


def facts_of(pages: list[Page], text: str, *, per_page: bool = True) -> Facts:
    flat = " ".join(p.text for p in pages) if pages else extract.strip_images(text)
    found = extract.dates(flat)
    money = extract.amounts(flat)
    with_text = [p for p in pages if p.text]
    return Facts(
        sentence=next(iter(extract.sentences(flat)), flat[:80]) or "emulated",
        title=extract.first_line("\n".join(p.raw for p in pages) if pages else extract.strip_images(text))
        or "emulated",
        language=extract.language(flat) or "en",
        first_page=(with_text or pages)[0].number if pages else None,
        date=found[0][0] if found else None,
        amount=(money[0][0], money[0][1]) if money else None,
        evidence=extract.evidence_on(with_text[0].raw) if with_text else None,
        per_page=tuple(facts_of([p], p.raw, per_page=False) for p in spread(with_text, 3))
        if per_page and len(with_text) > 1
        else (),
    )


def fill_schema(schema: Any, facts: Facts, name: str = "", depth: int = 0) -> Any:
    """A small value valid for `schema` (the subset of JSON Schema tool and output schemas use)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            options = [s for s in schema[key] if isinstance(s, dict) and s.get("type") != "null"] or schema[
                key
            ]
            return fill_schema(options[0], facts, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    lowered = name.lower()
    if kind == "object":
        props = schema.get("properties") or {}
        # a cited value {value, pages, evidence} is named by its field, not by "value"
        return {k: fill_schema(v, facts, name if k == "value" else k, depth + 1) for k, v in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems") or 1), 1)
        item_name = lowered[:-1] if lowered.endswith("s") else lowered
        items = schema.get("items") or {}
        cited = isinstance(items, dict) and "pages" in (items.get("properties") or {})
        if cited and facts.per_page:  # one item per page, from that page's text
            return [fill_schema(items, f, item_name, depth + 1) for f in facts.per_page]
        return [fill_schema(items, facts, item_name, depth + 1) for _ in range(count)]
    if kind == "integer":
        value = facts.first_page if "page" in lowered and facts.first_page is not None else 1
        return _clamp(value, schema)
    if kind == "number":
        if facts.amount is not None and not isinstance(facts.amount[0], bool):
            return facts.amount[0]
        return float(_clamp(1, schema))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if "evidence" in lowered and facts.evidence:
        text = facts.evidence
    elif "currency" in lowered and facts.amount is not None:
        text = facts.amount[1]
    elif (
        "date" in lowered or schema.get("format") == "date" or "YYYY-MM-DD" in str(schema.get("description"))
    ):
        text = facts.date or "2020-01-01"
    elif "title" in lowered or "name" in lowered:
        text = facts.title
    elif "lang" in lowered:
        text = facts.language
    else:
        text = facts.sentence
    limit = int(schema.get("maxLength") or 200)
    text = extract.shorten(text, max(limit - 1, 1))[:limit]
    return text.ljust(int(schema.get("minLength") or 0), ".")


def _clamp(value: int, schema: dict[str, Any]) -> int:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = int(low) if float(low).is_integer() else int(low) + 1
    if isinstance(high, int | float) and value > high:
        value = int(high)
    return value


# ---------------------------------------------------------------------------------------------- the answer


@dataclass(frozen=True, slots=True)
class Answer:
    content: str
    kind: str  # summary | reduce | packed | schema | text | tool_call
    first_page: int | None = None
    last_page: int | None = None
    page_count: int = 0
    tool_name: str | None = None
    task: str | None = None  # the output schema's title ("<profile>.<task>" for declared profiles)


def fit(build: Callable[[Size], str], sizes: tuple[tuple[int, ...], ...], budget: int | None) -> str:
    """The largest answer whose token count fits `budget` (or the smallest one)."""
    content = ""
    for raw in sizes:
        content = build(Size(*raw))
        if budget is None or tokens.count(content) <= budget:
            break
    return content


def merge_objects(objects: list[dict[str, Any]], schema: dict[str, Any]) -> dict[str, Any]:
    """Partials of any schema merged as a model would: list items united (an item seen again adds its
    pages to the first), the first non-empty value of every other field."""
    out: dict[str, Any] = {}
    for key in schema.get("properties") or {}:
        values = [o.get(key) for o in objects if o.get(key) not in (None, "", [])]
        if values and all(isinstance(v, list) for v in values):
            seen: dict[str, dict[str, Any]] = {}
            items: list[Any] = []
            for v in values:
                for item in v or []:
                    if not isinstance(item, dict):
                        if item not in items:
                            items.append(item)
                        continue
                    k = _dump({a: b for a, b in sorted(item.items()) if a not in ("pages", "evidence")})
                    if k in seen:
                        seen[k]["pages"] = sorted(
                            set(seen[k].get("pages") or []) | set(item.get("pages") or [])
                        )
                        continue
                    seen[k] = dict(item)
                    items.append(seen[k])
            out[key] = items
        else:
            out[key] = values[0] if values else None
    return out


def json_answer(
    user_text: str,
    system_text: str,
    schema: dict[str, Any] | None,
    budget: int | None,
    task_text: str = "",
) -> Answer:
    """The answer in JSON mode, by what the input holds (schema, documents, partials, pages).

    The output schema is the request's, else the one the system prompt shows, else the one in the
    last message (`task_text`: declared profiles send it with the task, after the document).
    """
    schema = schema if schema is not None else find_schema(system_text)
    if schema is None and task_text:
        schema = find_schema(task_text)
    documents = extract.parse_documents(user_text)
    pages = extract.parse_pages(user_text)
    numbers = [p.number for p in pages]
    span = {
        "first_page": min(numbers, default=None),
        "last_page": max(numbers, default=None),
        "page_count": len(numbers),
    }
    if schema is not None and not is_summary_schema(schema):
        title = schema.get("title") if isinstance(schema.get("title"), str) else None
        partials = extract.parse_partials(user_text)
        if partials:  # a reduce over any schema: lists united, the first value of each field
            first, last = min(a for a, _, _ in partials), max(b for _, b, _ in partials)
            content = _dump(merge_objects([o for _, _, o in partials], schema))
            return Answer(content, "reduce", first, last, last - first + 1, task=title)
        return Answer(
            _dump(fill_schema(schema, facts_of(pages, user_text))),
            "schema",
            task=title,
            **span,  # type: ignore[arg-type]
        )
    if documents:
        parsed = [
            (doc_id, extract.parse_pages(body) or [extract.Page(1, markup.unescape(body))])
            for doc_id, body in documents
        ]

        renders = {doc_id: summarizer(ps) for doc_id, ps in parsed}

        def packed(size: Size) -> str:
            return _dump({"documents": {doc_id: render(size) for doc_id, render in renders.items()}})

        return Answer(fit(packed, MAP_SIZES, budget), "packed", **span)  # type: ignore[arg-type]
    partials = extract.parse_partials(user_text)
    if partials:
        first, last = min(a for a, _, _ in partials), max(b for _, b, _ in partials)
        content = fit(lambda size: _dump(reduce_partials(partials, size)), REDUCE_SIZES, budget)
        return Answer(content, "reduce", first, last, last - first + 1)
    if not pages:  # no markers: the whole user text, uncited
        render_plain = summarizer([extract.Page(0, extract.strip_images(user_text))])

        def plain(size: Size) -> str:
            obj = render_plain(size)
            for item in obj["key_points"] + obj["dates"] + obj["amounts"]:
                item["pages"] = []
            obj["summary"] = obj["summary"].replace(" Covers page 0.", "")
            return _dump(obj)

        return Answer(fit(plain, MAP_SIZES, budget), "summary")
    render = summarizer(pages)
    return Answer(fit(lambda size: _dump(render(size)), MAP_SIZES, budget), "summary", **span)  # type: ignore[arg-type]


def text_answer(user_text: str, last_user: str) -> Answer:
    """Plain text (no JSON mode): what the pages say, or the start of the last user message."""
    pages = extract.parse_pages(user_text)
    if pages:
        numbers = [p.number for p in pages]
        opening = extract.sentences(" ".join(p.text for p in pages))[:2]
        body = " ".join(opening) or "The pages hold no text."
        return Answer(
            f"{body}{_covers(min(numbers), max(numbers))}", "text", min(numbers), max(numbers), len(numbers)
        )
    opening = extract.sentences(extract.strip_images(last_user))[:2]
    return Answer("Emulated answer: " + (" ".join(opening) or "nothing to answer."), "text")


def tool_call_answer(
    tool: dict[str, Any], user_text: str, call_index: int = 0
) -> tuple[Answer, dict[str, Any]]:
    """One call of `tool` with arguments valid for its parameters schema."""
    function = tool.get("function") or {}
    name = str(function.get("name") or "tool")
    pages = extract.parse_pages(user_text)
    arguments = fill_schema(function.get("parameters") or {"type": "object"}, facts_of(pages, user_text))
    call = {
        "index": call_index,
        "id": f"functions.{name}:{call_index}",
        "type": "function",
        "function": {"name": name, "arguments": _dump(arguments if arguments is not None else {})},
    }
    return Answer("", "tool_call", tool_name=name), call


def reasoning_for(answer: Answer) -> str:
    """A short, deterministic reasoning text (only sent when thinking is on)."""
    if answer.first_page is not None:
        return (
            f"The input holds pages {answer.first_page} to {answer.last_page}. "
            f"I will answer as {answer.kind}."
        )
    return f"I will answer as {answer.kind}."
