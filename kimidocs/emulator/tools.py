"""Moonshot's rules for `tools`, as strict as the documented API (kimi-api.md §5).

- at most 128 functions; a name of letters, digits, `_` and `-`, at most 64 characters;
- `parameters` is an object schema, "moonshot flavored": every property declares a `type` (kimi-cli
  issue #2061, kosong's `ensure_property_types`), and a `$ref` has no sibling keywords.

`tool_schema_problem` returns the first problem as Moonshot's message text, or None.
"""

from __future__ import annotations

import re
from typing import Any

MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_FLAVORED = "tools.function.parameters is not a valid moonshot flavored json schema"


def tool_schema_problem(tools: list[Any]) -> str | None:
    """The first reason these tools would get a 400 from Kimi, else None."""
    if len(tools) > MAX_TOOLS:
        return f"Invalid request: at most {MAX_TOOLS} tools are allowed, got {len(tools)}"
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            return f"Invalid request: tools[{i}] must be {{'type': 'function', 'function': {{...}}}}"
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            return (
                f"Invalid request: tools[{i}].function.name {name!r} must be 1-64 letters, digits, "
                "underscores or hyphens"
            )
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            return f"Invalid request: {_NOT_FLAVORED}: tools[{i}] parameters must be an object schema"
        where = _untyped_property(parameters, f"tools[{i}].function.parameters")
        if where is not None:
            return f"Invalid request: {_NOT_FLAVORED}: {where}"
    return None


def _untyped_property(schema: dict[str, Any], path: str) -> str | None:
    """Where a property lacks `type` (or a `$ref` has siblings), walking nested objects and arrays."""
    if "$ref" in schema and len(schema) > 1:
        return f"{path}: $ref with sibling keywords"
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.properties.{name}"
        if not isinstance(prop, dict):
            return f"{here}: not a schema"
        if "$ref" in prop:
            if len(prop) > 1:
                return f"{here}: $ref with sibling keywords"
            continue
        if "type" not in prop and not any(k in prop for k in ("anyOf", "oneOf", "allOf", "enum")):
            return f"{here}: property without type"
        found = _untyped_property(prop, here)
        if found:
            return found
        items = prop.get("items")
        if isinstance(items, dict):
            found = _untyped_property(items, f"{here}.items")
            if found:
                return found
    return None
