"""A task's fields -> the JSON Schema sent to the model. Pure.

The shape of an answer, per field type (validate.py accepts exactly this, leniently):

    string, text          "..." | null
    integer, number       123 | 1.5 | null
    boolean               true | false | null
    date                  "2024-03-01" (ISO when the day is known, else as written) | null
    money                 {"value": 1200.5, "currency": "EUR"} | null
    enum                  one of the declared values | null
    cite = true           {"value": <as above>, "pages": [3], "evidence": "short quote"}
                          (money: {"value", "currency", "pages", "evidence"})
    list                  [<item>, ...]; a cited list's items carry "pages" and "evidence"
    list of objects       [{"<field>": <as above>, ..., "pages": [..], "evidence": ".."}, ...]

A map partial uses the same schema without `required`: a part of a document may not show a field.
"""

from __future__ import annotations

from typing import Any

from kimidocs.profiles.declaration import FieldSpec, ProfileSpec, TaskSpec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
PAGES_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "integer"},
    "description": "page numbers where this appears",
}
EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": ["string", "null"],
    "description": "a short quote (at most 20 words) copied verbatim from a cited page",
}
_DATE_HINT = "ISO 8601 (YYYY-MM-DD) when the day is known, else as written"
_SIMPLE = {
    "string": "string",
    "text": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
}


def task_schema(profile: ProfileSpec, task: TaskSpec, *, partial: bool = False) -> dict[str, Any]:
    """The JSON Schema of one answer to `task` (final answer, or a map partial when `partial`)."""
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{profile.name}.{task.name}",
        "type": "object",
        "properties": {f.name: field_schema(f) for f in task.fields},
        "additionalProperties": False,
    }
    required = [f.name for f in task.fields if f.required]
    if required and not partial:
        schema["required"] = required
    return schema


def field_schema(field: FieldSpec) -> dict[str, Any]:
    """The schema of one top-level field's value."""
    if field.is_list:
        out: dict[str, Any] = {"type": "array", "items": _item_schema(field)}
    elif field.cite:
        out = _cited(field, nullable=True)
    else:
        out = _value(field, nullable=True)
    return _described(out, field.description)


def _item_schema(field: FieldSpec) -> dict[str, Any]:
    if field.fields:
        properties = {f.name: _described(_nested(f), f.description) for f in field.fields}
        required = [f.name for f in field.fields if f.required]
        if field.cite:
            properties |= {"pages": PAGES_SCHEMA, "evidence": EVIDENCE_SCHEMA}
            required.append("pages")
        out: dict[str, Any] = {"type": "object", "properties": properties}
        return out | ({"required": required} if required else {})
    assert field.items is not None
    item = field.items
    if field.cite:
        return _described(_cited(item, nullable=False), item.description)
    return _described(_value(item, nullable=False), item.description)


def _nested(field: FieldSpec) -> dict[str, Any]:
    """A field of a list's objects: a value, or a list of plain values."""
    if field.is_list:
        assert field.items is not None
        return {
            "type": "array",
            "items": _described(_value(field.items, nullable=False), field.items.description),
        }
    return _value(field, nullable=not field.required)


def _value(field: FieldSpec, *, nullable: bool) -> dict[str, Any]:
    """A bare value of a scalar type."""
    if field.type == "enum":
        return {"enum": [*field.values, *([None] if nullable else [])]}
    if field.type == "money":
        out = {"type": "object", "properties": _money_properties(), "required": ["value"]}
        return _nullable(out) if nullable else out
    if field.type == "date":
        out = {"type": "string", "description": _DATE_HINT}
        return _nullable(out) if nullable else out
    out = {"type": _SIMPLE[field.type]}
    return _nullable(out) if nullable else out


def _cited(field: FieldSpec, *, nullable: bool) -> dict[str, Any]:
    """A scalar with the pages it comes from and a quote: {value, pages, evidence}."""
    is_money = field.type == "money"
    properties = _money_properties() if is_money else {"value": _value(field, nullable=False)}
    properties |= {"pages": PAGES_SCHEMA, "evidence": EVIDENCE_SCHEMA}
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": ["value", "pages"]}
    return _nullable(out) if nullable else out


def _money_properties() -> dict[str, Any]:
    return {
        "value": {"type": ["number", "string"], "description": "the amount, a number when it is one"},
        "currency": {"type": ["string", "null"], "description": "ISO 4217 code (USD, EUR, ...) or null"},
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return schema | {"type": [kind, "null"]}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    if not description:
        return schema
    if "description" in schema:
        return schema | {"description": f"{description} ({schema['description']})"}
    return schema | {"description": description}
