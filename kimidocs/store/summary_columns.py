"""A validated `Summary` -> the typed column values of one `summaries` row (pure, no duckdb).

Every list item keeps its original text beside the coerced value, and every value that could
not be coerced becomes NULL plus one line in `coercion_warnings` (also returned to the caller,
so the run report can count them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kimidocs.core.results import Summary
from kimidocs.store.coerce import clean_pages, clean_text, parse_amount, parse_date, to_datetime
from kimidocs.store.rows import SummaryRow


@dataclass(frozen=True, slots=True)
class SummaryColumns:
    values: dict[str, Any]
    warnings: tuple[str, ...]


def _pages(pages: list[int], where: str, warnings: list[str]) -> list[int]:
    kept, dropped = clean_pages(pages)
    if dropped:
        warnings.append(f"{where}: dropped page numbers outside 1..2^31-1")
    return kept


def summary_columns(row: SummaryRow) -> SummaryColumns:
    """Column name -> value for INSERT, in the table's column order."""
    s: Summary = row.summary
    warnings: list[str] = []
    key_points = [
        {
            "point": clean_text(kp.point),
            "pages": _pages(kp.pages, f"key_points[{i}]", warnings),
            "evidence": clean_text(kp.evidence),
        }
        for i, kp in enumerate(s.key_points)
    ]
    entities = [{"name": clean_text(e.name), "type": clean_text(e.type)} for e in s.entities]
    dates = []
    for i, d in enumerate(s.dates):
        parsed = parse_date(d.date)
        if parsed.value is None:
            warnings.append(f"dates[{i}]: cannot read {d.date[:80]!r} as a date")
        dates.append(
            {
                "date": parsed.value,
                "precision": parsed.precision,
                "date_text": clean_text(d.date),
                "what": clean_text(d.what),
                "pages": _pages(d.pages, f"dates[{i}]", warnings),
            }
        )
    amounts = []
    for i, a in enumerate(s.amounts):
        parsed = parse_amount(a.value, a.currency)  # type: ignore[assignment]
        if parsed.value is None:
            warnings.append(f"amounts[{i}]: cannot read {str(a.value)[:80]!r} as a number")
        amounts.append(
            {
                "value": parsed.value,
                "value_text": clean_text(str(a.value)),
                "currency": clean_text(parsed.currency),  # type: ignore[attr-defined]
                "what": clean_text(a.what),
                "pages": _pages(a.pages, f"amounts[{i}]", warnings),
            }
        )
    raw = _json_or_string(row.raw, warnings)
    values = {
        "doc_id": row.doc_id,
        "profile": row.profile,
        "prompt_version": row.prompt_version,
        "model": row.model,
        "run_id": row.run_id,
        "backend": row.backend,
        "created_at": to_datetime(row.created_at),
        "title": clean_text(s.title),
        "document_type": clean_text(s.document_type),
        "language": clean_text(s.language),
        "summary": clean_text(s.summary),
        "key_points": key_points,
        "entities": entities,
        "dates": dates,
        "amounts": amounts,
        "coverage": float(row.coverage),
        "pages_read": row.pages_read,
        "pages_total": row.pages_total,
        "pages_failed": row.pages_failed,
        "coercion_warnings": warnings,
        "raw": raw,
    }
    return SummaryColumns(values, tuple(warnings))


def _json_or_string(raw: str, warnings: list[str]) -> str:
    """The raw output, cleaned; the INSERT stores text DuckDB cannot parse as a JSON string."""
    raw = clean_text(raw) or ""
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        warnings.append("raw: not valid JSON, stored as a JSON string")
    return raw


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
