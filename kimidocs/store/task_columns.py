"""A validated task answer -> the values of one `task_results` row (pure, no duckdb).

The answer's values are coerced here, with the same rules as summaries (coerce.py), into the
*stored layout* that kimidocs/profiles/views.py reads with `from_json` (see its docstring): dates
as ISO text with their precision and the text as written, money as an exact decimal string with
its currency and text, integers and numbers as JSON numbers, booleans as JSON booleans. A value
that cannot be read is null, its text is kept (dates, money) and one line goes to
`coercion_warnings`; the answer as validated is kept whole in `raw`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from kimidocs.profiles.declaration import FieldSpec, TaskSpec
from kimidocs.store.coerce import clean_pages, clean_text, parse_amount, parse_date, to_datetime
from kimidocs.store.rows import TaskResultRow

INT64_MAX = 2**63 - 1
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


@dataclass(frozen=True, slots=True)
class TaskColumns:
    values: dict[str, Any]
    warnings: tuple[str, ...]


def task_columns(row: TaskResultRow) -> TaskColumns:
    """Column name -> value for INSERT into task_results; `result` and `raw` as JSON text."""
    warnings: list[str] = []
    answer = row.answer.model_dump(mode="python") if isinstance(row.answer, BaseModel) else dict(row.answer)
    result = stored_result(row.spec, answer, warnings)
    raw = row.raw if row.raw is not None else _dumps(_jsonable(answer))
    values = {
        "doc_id": row.doc_id,
        "profile": row.profile,
        "task": row.spec.name,
        "profile_version": row.profile_version,
        "task_version": row.task_version,
        "model": row.model,
        "run_id": row.run_id,
        "backend": row.backend,
        "created_at": to_datetime(row.created_at),
        "coverage": float(row.coverage),
        "pages_read": row.pages_read,
        "pages_total": row.pages_total,
        "pages_failed": row.pages_failed,
        "coercion_warnings": warnings,
        "result": _dumps(result),
        "raw": clean_text(raw) or "",
    }
    return TaskColumns(values, tuple(warnings))


def stored_result(task: TaskSpec, answer: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The answer in the stored layout: one entry per declared field, nothing else."""
    return {f.name: _field(f, answer.get(f.name), f.name, warnings) for f in task.fields}


def _field(field: FieldSpec, value: Any, where: str, warnings: list[str]) -> Any:
    if field.is_list:
        items = value if isinstance(value, list) else []
        if field.fields:
            return [_object(field, item, f"{where}[{i}]", warnings) for i, item in enumerate(items)]
        assert field.items is not None
        return [
            _cell(field.items, v, f"{where}[{i}]", warnings, cite=field.cite) for i, v in enumerate(items)
        ]
    return _cell(field, value, where, warnings, cite=field.cite)


def _object(field: FieldSpec, item: Any, where: str, warnings: list[str]) -> dict[str, Any]:
    item = item if isinstance(item, dict) else {}
    out = {f.name: _field(f, item.get(f.name), f"{where}.{f.name}", warnings) for f in field.fields}
    if field.cite:
        out |= _citation(item, where, warnings)
    return out


def _cell(field: FieldSpec, value: Any, where: str, warnings: list[str], *, cite: bool) -> Any:
    """One scalar value in the stored layout (`value` is the validated answer's, maybe cited)."""
    if cite:
        if value is None:
            return None
        cited = value if isinstance(value, dict) else {"value": value}
        inner = cited if field.type == "money" else cited.get("value")
        cell = _scalar(field, inner, where, warnings)
        base = cell if isinstance(cell, dict) else {"value": cell}
        return base | _citation(cited, where, warnings)
    return _scalar(field, value, where, warnings)


def _citation(item: dict[str, Any], where: str, warnings: list[str]) -> dict[str, Any]:
    pages = item.get("pages") or []
    kept, dropped = clean_pages(list(pages))
    if dropped:
        warnings.append(f"{where}: dropped page numbers outside 1..2^31-1")
    return {"pages": kept, "evidence": clean_text(item.get("evidence"))}


def _scalar(field: FieldSpec, value: Any, where: str, warnings: list[str]) -> Any:
    kind = field.type
    if kind == "date":
        return _date(value, where, warnings)
    if kind == "money":
        return _money(value, where, warnings)
    if value is None:
        return None
    if kind in ("string", "text", "enum"):
        return clean_text(str(value))
    if kind == "boolean":
        return _bool(value, where, warnings)
    return _numeric(value, kind == "integer", where, warnings)


def _date(value: Any, where: str, warnings: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    text = clean_text(str(value)) or ""
    parsed = parse_date(text)
    if parsed.value is None:
        warnings.append(f"{where}: cannot read {text[:80]!r} as a date")
    iso = parsed.value.isoformat() if parsed.value else None
    return {"value": iso, "precision": parsed.precision, "text": text}


def _money(value: Any, where: str, warnings: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    money = value if isinstance(value, dict) else {"value": value}
    raw = money.get("value")
    if raw is None:
        return None
    parsed = parse_amount(raw, money.get("currency"))
    if parsed.value is None:
        warnings.append(f"{where}: cannot read {str(raw)[:80]!r} as an amount")
    amount = str(parsed.value) if parsed.value is not None else None
    return {"value": amount, "currency": clean_text(parsed.currency), "text": clean_text(str(raw))}


def _bool(value: Any, where: str, warnings: list[str]) -> bool | None:
    if isinstance(value, bool):
        return value
    low = str(value).strip().casefold()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    warnings.append(f"{where}: cannot read {str(value)[:80]!r} as true or false")
    return None


def _numeric(value: Any, integer: bool, where: str, warnings: list[str]) -> int | float | None:
    """An integer (BIGINT) or number (DOUBLE) from what the model wrote ("1,200", "12 months", 3.0)."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float):
        number = Decimal(str(value)) if not isinstance(value, float) or math.isfinite(value) else None
    else:
        number = parse_amount(str(value)).value
    if number is not None and integer:
        ok = number == number.to_integral_value() and abs(number) <= INT64_MAX
        result: int | float | None = int(number) if ok else None
    elif number is not None:
        as_float = float(number)
        result = as_float if math.isfinite(as_float) else None
    else:
        result = None
    if result is None:
        kind = "an integer" if integer else "a number"
        warnings.append(f"{where}: cannot read {str(value)[:80]!r} as {kind}")
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(obj: Any) -> str:
    return clean_text(json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False)) or "null"
