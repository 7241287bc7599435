"""`profile.toml` -> frozen records (`ProfileSpec`, `TaskSpec`, `FieldSpec`). Pure: no I/O but the
caller's bytes.

The declaration is the single source of the JSON Schema (schema.py), the pydantic answer model
(validate.py) and the typed DuckDB views (views.py), so it is checked strictly here, once: an
unknown key, a wrong type or a name that would collide in SQL is a `DeclarationError` naming the
file and the key, before any money is spent.

    description = "..."                 # shown by `kimidocs profiles list`
    instructions = "..."                # shared by every task (part of the cached system message)
    max_output_tokens = 4096            # optional; per task too
    partial_output_tokens = 1536        # optional; per task too

    [[tasks]]
    name = "terms"
    instructions = "..."
    [tasks.fields]
    effective_date = {type = "date", cite = true, description = "..."}
    governing_law = "string"            # shorthand for {type = "string"}
    parties = {type = "list", cite = true, fields = {name = "string", role = {type = "enum", values = ["a"]}}}
    renewals = {type = "list", items = "date"}
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kimidocs.profiles.errors import DeclarationError

SCALAR_TYPES = ("string", "text", "integer", "number", "boolean", "date", "money", "enum")
LIST = "list"
DEFAULT_MAX_OUTPUT_TOKENS = 4096
DEFAULT_PARTIAL_OUTPUT_TOKENS = 1536
MIN_OUTPUT_TOKENS = 64

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
# Columns every typed view has, and keys cited items carry: a field may not take these names.
RESERVED_NAMES = frozenset(
    {
        "doc_id",
        "path",
        "profile",
        "task",
        "profile_version",
        "task_version",
        "model",
        "run_id",
        "backend",
        "created_at",
        "coverage",
        "pages_failed",
        "item_no",
        "pages",
        "evidence",
    }
)
_PROFILE_KEYS = ("description", "instructions", "max_output_tokens", "partial_output_tokens", "tasks")
_TASK_KEYS = ("name", "description", "instructions", "fields", "max_output_tokens", "partial_output_tokens")
_FIELD_KEYS = ("type", "description", "cite", "required", "values", "items", "fields")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One declared field. A list has either `items` (a scalar spec) or `fields` (a list of objects).

    `cite` on a scalar wraps its value as {value, pages, evidence}; on a list, every item carries
    `pages` and `evidence`. `required` fields must be present and non-empty in a final answer.
    """

    name: str
    type: str
    description: str = ""
    cite: bool = False
    required: bool = False
    values: tuple[str, ...] = ()
    items: FieldSpec | None = None
    fields: tuple[FieldSpec, ...] = ()

    @property
    def is_list(self) -> bool:
        return self.type == LIST

    @property
    def is_object_list(self) -> bool:
        return self.type == LIST and bool(self.fields)

    def canonical(self) -> dict[str, Any]:
        """A plain dict of everything that shapes the prompt and the columns (hashed into versions)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description}
        out |= {"cite": self.cite, "required": self.required, "values": list(self.values)}
        out["items"] = self.items.canonical() if self.items else None
        out["fields"] = [f.canonical() for f in self.fields]
        return out


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task: its own instructions and fields; one answer (one JSON object) per document."""

    name: str
    instructions: str
    fields: tuple[FieldSpec, ...]
    description: str = ""
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    partial_output_tokens: int = DEFAULT_PARTIAL_OUTPUT_TOKENS

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A parsed declaration. `file` is where it was read from (for messages only)."""

    name: str
    description: str
    instructions: str
    tasks: tuple[TaskSpec, ...]
    file: str = ""

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tasks)
        raise DeclarationError(self.file, f"tasks.{name}", f"no such task (tasks: {known})")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


# ------------------------------------------------------------------------------------------ columns


def column_suffixes(field: FieldSpec) -> tuple[str, ...]:
    """Suffixes of the view columns a scalar field becomes ("" is the value itself).

    A date keeps its text as written and its precision; money keeps its currency and text; a cited
    scalar adds its pages and evidence. A list is one LIST column. Shared with views.py, so the
    collision check here and the SQL there cannot disagree.
    """
    if field.is_list:
        return ("",)
    extra = {"date": ("_precision", "_text"), "money": ("_currency", "_text")}.get(field.type, ())
    return ("", *extra, *(("_pages", "_evidence") if field.cite else ()))


# ------------------------------------------------------------------------------------------ parsing


def parse_profile(text: str, *, name: str, file: Path | str) -> ProfileSpec:
    """The declaration in `text` (the bytes of `file`, decoded); raises `DeclarationError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DeclarationError(file, "", f"not valid TOML: {err}") from None
    return _Parser(str(file)).profile(data, name)


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str) -> DeclarationError:
        return DeclarationError(self.file, key, problem)

    def profile(self, data: Mapping[str, Any], name: str) -> ProfileSpec:
        if not _NAME.match(name):
            raise self.fail("", f"profile name {name!r} must be lower-case letters, digits and _ (a-z first)")
        self.unknown(data, _PROFILE_KEYS, "")
        tasks_raw = data.get("tasks")
        if not isinstance(tasks_raw, list) or not tasks_raw:
            raise self.fail("tasks", "declare at least one task as [[tasks]] with a name and fields")
        limits = self.limits(data, "", DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_PARTIAL_OUTPUT_TOKENS)
        tasks: list[TaskSpec] = []
        for i, raw in enumerate(tasks_raw):
            task = self.task(raw, f"tasks[{i}]", limits)
            if any(t.name == task.name for t in tasks):
                raise self.fail(f"tasks[{i}].name", f"task {task.name!r} is declared twice")
            tasks.append(task)
        return ProfileSpec(
            name=name,
            description=self.text(data, "description", ""),
            instructions=self.text(data, "instructions", "").strip(),
            tasks=tuple(tasks),
            file=self.file,
        )

    def task(self, raw: Any, key: str, limits: tuple[int, int]) -> TaskSpec:
        if not isinstance(raw, dict):
            raise self.fail(key, "a task is a table: [[tasks]] with name, instructions and fields")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail(f"{key}.name", "needs a name of lower-case letters, digits and _ (a-z first)")
        key = f"tasks.{name}"
        self.unknown(raw, _TASK_KEYS, key)
        instructions = self.text(raw, "instructions", None, key).strip()
        if not instructions:
            raise self.fail(f"{key}.instructions", "must say what the task asks for")
        fields_raw = raw.get("fields")
        if not isinstance(fields_raw, dict) or not fields_raw:
            raise self.fail(f"{key}.fields", 'declare at least one field, e.g. [tasks.fields] x = "string"')
        fields = tuple(self.field(n, v, f"{key}.fields.{n}", nested=False) for n, v in fields_raw.items())
        self.no_collisions(fields, f"{key}.fields")
        max_out, partial_out = self.limits(raw, key, *limits)
        return TaskSpec(
            name=name,
            instructions=instructions,
            fields=fields,
            description=self.text(raw, "description", "", key),
            max_output_tokens=max_out,
            partial_output_tokens=partial_out,
        )

    def field(self, name: str, raw: Any, key: str, *, nested: bool) -> FieldSpec:
        if not _NAME.match(name):
            raise self.fail(key, "field names are lower-case letters, digits and _ (a-z first)")
        if name in RESERVED_NAMES:
            raise self.fail(key, f"{name!r} is reserved (a view column or a cited item's key)")
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict):
            raise self.fail(key, 'a field is a type name ("string") or a table {type = "...", ...}')
        self.unknown(raw, _FIELD_KEYS, key)
        ftype = raw.get("type")
        known = (*SCALAR_TYPES, LIST)
        if ftype not in known:
            raise self.fail(f"{key}.type", f"must be one of {', '.join(known)}; got {ftype!r}")
        cite = self.flag(raw, "cite", key)
        if cite and nested:
            raise self.fail(f"{key}.cite", "cite belongs on the list; every item of a cited list has pages")
        spec = FieldSpec(
            name=name,
            type=ftype,
            description=self.text(raw, "description", "", key),
            cite=cite,
            required=self.flag(raw, "required", key),
        )
        if ftype == "enum":
            return _replace(spec, values=self.enum_values(raw, key))
        if "values" in raw:
            raise self.fail(f"{key}.values", "only an enum has values")
        if ftype != LIST:
            for k in ("items", "fields"):
                if k in raw:
                    raise self.fail(f"{key}.{k}", f"only a list has {k}")
            return spec
        return self.list_field(spec, raw, key, nested=nested)

    def list_field(self, spec: FieldSpec, raw: Mapping[str, Any], key: str, *, nested: bool) -> FieldSpec:
        has_items, has_fields = "items" in raw, "fields" in raw
        if has_items == has_fields:
            raise self.fail(key, 'a list needs either items = "<type>" or fields = {...} (a list of objects)')
        if has_items:
            item_raw = raw["items"]
            if isinstance(item_raw, str):
                item_raw = {"type": item_raw}
            if not isinstance(item_raw, dict):
                raise self.fail(f"{key}.items", 'is a type name ("date") or a table {type = "enum", ...}')
            bad = set(item_raw) - {"type", "values", "description"}
            if bad:
                raise self.fail(f"{key}.items.{sorted(bad)[0]}", "items take only type, values, description")
            if item_raw.get("type") not in SCALAR_TYPES:
                got = item_raw.get("type")
                raise self.fail(f"{key}.items.type", f"must be one of {', '.join(SCALAR_TYPES)}; got {got!r}")
            item = self.field("item", item_raw, f"{key}.items", nested=True)
            return _replace(spec, items=item)
        if nested:
            raise self.fail(f"{key}.fields", "a list of objects cannot sit inside another list's objects")
        fields_raw = raw["fields"]
        if not isinstance(fields_raw, dict) or not fields_raw:
            raise self.fail(f"{key}.fields", "a list of objects needs at least one field")
        fields = tuple(self.field(n, v, f"{key}.fields.{n}", nested=True) for n, v in fields_raw.items())
        self.no_collisions(fields, f"{key}.fields")
        return _replace(spec, fields=fields)

    def enum_values(self, raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
        values = raw.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise self.fail(f"{key}.values", "an enum needs a non-empty list of non-empty strings")
        folded = [fold_enum(v) for v in values]
        if len(set(folded)) != len(folded):
            raise self.fail(f"{key}.values", "values must differ (compared ignoring case, spaces, - and _)")
        return tuple(values)

    def no_collisions(self, fields: tuple[FieldSpec, ...], key: str) -> None:
        """Every generated column name (x, x_text, x_pages, ...) is taken by one field only."""
        owner: dict[str, str] = {}
        for f in fields:
            for suffix in column_suffixes(f):
                column = f.name + suffix
                if column in owner and owner[column] != f.name:
                    raise self.fail(
                        f"{key}.{f.name}",
                        f"its column {column!r} collides with field {owner[column]!r}'s; rename one",
                    )
                owner[column] = f.name

    def limits(
        self, raw: Mapping[str, Any], key: str, max_default: int, partial_default: int
    ) -> tuple[int, int]:
        out = []
        for name, default in (("max_output_tokens", max_default), ("partial_output_tokens", partial_default)):
            value = raw.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < MIN_OUTPUT_TOKENS:
                raise self.fail(_join(key, name), f"must be an integer of at least {MIN_OUTPUT_TOKENS}")
            out.append(value)
        return out[0], min(out[1], out[0])

    def text(self, raw: Mapping[str, Any], name: str, default: str | None, key: str = "") -> str:
        value = raw.get(name, default)
        if not isinstance(value, str):
            what = "is required and must be text" if name not in raw else "must be text"
            raise self.fail(_join(key, name), what)
        return value

    def flag(self, raw: Mapping[str, Any], name: str, key: str) -> bool:
        value = raw.get(name, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}", "must be true or false")
        return value

    def unknown(self, raw: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
        for k in raw:
            if k not in allowed:
                raise self.fail(_join(key, k), f"unknown key (allowed: {', '.join(allowed)})")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _replace(spec: FieldSpec, **changes: Any) -> FieldSpec:
    return replace(spec, **changes)


def fold_enum(value: str) -> str:
    """How enum values are compared: case, spaces, hyphens and underscores do not count."""
    return re.sub(r"[\s_\-]+", "", value).casefold()


def walk_fields(fields: tuple[FieldSpec, ...]) -> Iterator[FieldSpec]:
    """Every field, depth first (objects' fields and list items included)."""
    for f in fields:
        yield f
        if f.items is not None:
            yield f.items
        yield from walk_fields(f.fields)
