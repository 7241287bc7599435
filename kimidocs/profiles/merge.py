"""Answers of one declared task, for map-reduce: render, trim, and merge without the model. Pure.

`merge_answers` is the fallback when a reduce answer stays unusable (cut at max_tokens, invalid
after one repair): nothing cited is lost and no page is renumbered.

    list fields      items concatenated in page order; an item equal to an earlier one (ignoring
                     case, spacing, pages and evidence) is dropped and its pages join the earlier's
    scalar fields    the first value any partial gives (partials come in page order); a cited
                     value given again by later partials gains their pages
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from kimidocs.profiles.declaration import TaskSpec
from kimidocs.profiles.validate import AnswerModel, answer_model

CITE_KEYS = ("pages", "evidence")
TRIM_TEXT_CHARS = 200


def answer_json(answer: BaseModel) -> str:
    """Compact JSON of an answer (reduce input, `raw`), UTF-8 kept."""
    return json.dumps(answer.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def _norm(value: Any) -> Any:
    """A value compared for duplicates: text folded, pages and evidence left out."""
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value).strip().casefold()
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in sorted(value.items()) if k not in CITE_KEYS}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _key(value: Any) -> str:
    return json.dumps(_norm(value), sort_keys=True, ensure_ascii=False, default=str)


def _union_pages(into: dict[str, Any], other: Any) -> None:
    if isinstance(other, dict) and isinstance(into.get("pages"), list):
        pages = set(into["pages"]) | set(other.get("pages") or [])
        into["pages"] = sorted(p for p in pages if isinstance(p, int))
        if not into.get("evidence") and other.get("evidence"):
            into["evidence"] = other["evidence"]


def _empty(value: Any) -> bool:
    if value is None or value == "" or value == []:
        return True
    return isinstance(value, dict) and "pages" in value and value.get("value") in (None, "")


def merge_answers(task: TaskSpec, answers: Sequence[BaseModel]) -> AnswerModel:
    """One answer from several (in page order), without the model; see the module docstring.

    The result is validated as a partial answer (nothing required): a merge cannot invent a value
    no partial gave.
    """
    dumped = [a.model_dump(mode="python") for a in answers]
    out: dict[str, Any] = {}
    for field in task.fields:
        values = [d.get(field.name) for d in dumped]
        if field.is_list:
            items: list[Any] = []
            seen: dict[str, int] = {}
            for value in values:
                for item in value or []:
                    key = _key(item)
                    if key in seen:
                        _union_pages(items[seen[key]], item)
                        continue
                    seen[key] = len(items)
                    items.append(dict(item) if isinstance(item, dict) else item)
            out[field.name] = items
            continue
        chosen: Any = None
        for value in values:
            if _empty(value):
                continue
            if chosen is None:
                chosen = dict(value) if isinstance(value, dict) else value
            elif isinstance(chosen, dict) and _key(chosen) == _key(value):
                _union_pages(chosen, value)
        out[field.name] = chosen
    return answer_model(task, partial=True).model_validate(out)


def trim_answer(answer: BaseModel) -> BaseModel | None:
    """`answer` with one item fewer (the longest list loses its last item), or its longest text
    halved; None when nothing is left to take."""
    lists = {k: v for k, v in answer if isinstance(v, list)}
    if lists:
        name = max(lists, key=lambda k: len(lists[k]))
        if lists[name]:
            return answer.model_copy(update={name: lists[name][:-1]})
    texts = {k: v for k, v in answer if isinstance(v, str) and len(v) > TRIM_TEXT_CHARS}
    if texts:
        name = max(texts, key=lambda k: len(texts[k]))
        return answer.model_copy(update={name: texts[name][: len(texts[name]) // 2]})
    return None
