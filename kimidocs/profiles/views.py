"""A declared profile -> the SQL of its typed DuckDB views. Produces text only; duckdb stays in
kimidocs/store (`Store.refresh_profile_views` runs it).

`task_results.result` holds each answer in the *stored layout* below, written by
kimidocs/store/task_columns.py: values already coerced (ISO dates, decimal strings), so a view
only has to read JSON into types with `from_json` and can never fail on a row:

    string, text, enum    "..." | null                       -> VARCHAR
    integer               123 | null                         -> BIGINT
    number                1.5 | null                         -> DOUBLE
    boolean               true | false | null                -> BOOLEAN
    date                  {"value": "2024-03-01", "precision": "day", "text": "1 March 2024"}
                                                             -> DATE, precision, text as written
    money                 {"value": "1200.5000", "currency": "EUR", "text": "€1,200.50"}
                                                             -> DECIMAL(38,4), currency, text
    cite = true           the value's object (or {"value": x}) plus "pages": [..], "evidence": ".."
    list                  [<item>, ...]                      -> LIST of the item's type
    list of objects       [{"<field>": <as above>, ..., "pages", "evidence"}] -> LIST<STRUCT>

Views, per task (rows of the task's *current* version only, newest per document; older versions'
rows stay in `task_results`, queryable by `task_version`):

    profile_<profile>_<task>            one row per document: a column per scalar (plus _precision,
                                        _text, _currency, _pages, _evidence where the type has them),
                                        one LIST column per list
    profile_<profile>_<task>_<field>    one row per item of a cited list or a list of objects
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kimidocs.profiles.declaration import FieldSpec, ProfileSpec, TaskSpec, column_suffixes
from kimidocs.profiles.errors import DeclarationError

VIEW_PREFIX = "profile_"
_BASE_TYPES = {
    "string": "VARCHAR",
    "text": "VARCHAR",
    "enum": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "money": "DECIMAL(38,4)",
}
_EXTRA = {
    "date": {"precision": "VARCHAR", "text": "VARCHAR"},
    "money": {"currency": "VARCHAR", "text": "VARCHAR"},
}
_CITE = {"pages": ["INTEGER"], "evidence": "VARCHAR"}
# Columns of every per-task view, before the fields: (name, SQL type, expression over r and d).
BASE_COLUMNS = (
    ("doc_id", "VARCHAR", "r.doc_id"),
    ("path", "VARCHAR", "d.path"),
    ("profile", "VARCHAR", "r.profile"),
    ("task", "VARCHAR", "r.task"),
    ("profile_version", "VARCHAR", "r.profile_version"),
    ("task_version", "VARCHAR", "r.task_version"),
    ("model", "VARCHAR", "r.model"),
    ("run_id", "VARCHAR", "r.run_id"),
    ("backend", "VARCHAR", "r.backend"),
    ("created_at", "TIMESTAMP", "r.created_at"),
    ("coverage", "DOUBLE", "r.coverage"),
    ("pages_failed", "INTEGER", "r.pages_failed"),
)
FLAT_BASE = ("doc_id", "path", "profile", "task_version", "model")


@dataclass(frozen=True, slots=True)
class ViewDef:
    """One view: its name, its CREATE statement, its columns as (name, DuckDB type), the task it
    shows, and the list field it flattens (None for the task's main view)."""

    name: str
    sql: str
    columns: tuple[tuple[str, str], ...]
    task: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileViews:
    """Every view of one profile version (what `Store.refresh_profile_views` takes)."""

    profile: str
    version: str
    views: tuple[ViewDef, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)


# ------------------------------------------------------------------------------------- structures


def cell_structure(field: FieldSpec, *, cite: bool | None = None) -> Any:
    """The `from_json` structure of one stored value of `field` (a list: of the whole list)."""
    if field.is_list:
        if field.fields:
            item: dict[str, Any] = {f.name: cell_structure(f) for f in field.fields}
            return [item | (_CITE if field.cite else {})]
        assert field.items is not None
        return [cell_structure(field.items, cite=field.cite)]
    cited = field.cite if cite is None else cite
    base = _BASE_TYPES[field.type]
    if field.type in _EXTRA or cited:
        return {"value": base} | _EXTRA.get(field.type, {}) | (_CITE if cited else {})
    return base


def task_structure(task: TaskSpec) -> dict[str, Any]:
    """The `from_json` structure of a whole stored answer."""
    return {f.name: cell_structure(f) for f in task.fields}


def sql_type(structure: Any) -> str:
    """DuckDB's name for the type `from_json(x, structure)` returns (as DESCRIBE prints it)."""
    if isinstance(structure, str):
        return structure
    if isinstance(structure, list):
        return sql_type(structure[0]) + "[]"
    members = ", ".join(f"{k} {sql_type(v)}" for k, v in structure.items())
    return f"STRUCT({members})"


# ------------------------------------------------------------------------------------- columns


def scalar_columns(field: FieldSpec, source: str) -> list[tuple[str, str, str]]:
    """(column, type, expression) of a scalar field read from the struct or value `source`."""
    structure = cell_structure(field)
    if isinstance(structure, str):
        return [(field.name, structure, source)]
    out = []
    for suffix in column_suffixes(field):
        key = suffix.lstrip("_") or "value"
        out.append((field.name + suffix, sql_type(structure[key]), f"{source}.{_q(key)}"))
    return out


def task_columns(task: TaskSpec) -> list[tuple[str, str, str]]:
    """The field columns of the per-task view (after BASE_COLUMNS)."""
    out = []
    for f in task.fields:
        if f.is_list:
            out.append((f.name, sql_type(cell_structure(f)), f"t.{_q(f.name)}"))
        else:
            out.extend(scalar_columns(f, f"t.{_q(f.name)}"))
    return out


def item_columns(field: FieldSpec) -> list[tuple[str, str, str]]:
    """The item columns of a flattened list view, read from `i.item`."""
    if field.fields:
        out = []
        for f in field.fields:
            src = f"i.item.{_q(f.name)}"
            out.extend([(f.name, sql_type(cell_structure(f)), src)] if f.is_list else scalar_columns(f, src))
        if field.cite:
            out += [("pages", "INTEGER[]", "i.item.pages"), ("evidence", "VARCHAR", "i.item.evidence")]
        return out
    assert field.items is not None
    value = FieldSpec("value", field.items.type, values=field.items.values)
    if not field.cite:
        return scalar_columns(value, "i.item")
    source = "i.item" if field.items.type in _EXTRA else "i.item.value"
    cite = [("pages", "INTEGER[]", "i.item.pages"), ("evidence", "VARCHAR", "i.item.evidence")]
    return scalar_columns(value, source) + cite


# ------------------------------------------------------------------------------------- views


def view_name(profile: str, task: str, field: str | None = None) -> str:
    return VIEW_PREFIX + "_".join(p for p in (profile, task, field) if p)


def profile_views(spec: ProfileSpec, version: str, task_versions: dict[str, str] | Any) -> ProfileViews:
    """Every view of the profile: one per task, and one per cited list or list of objects."""
    views: list[ViewDef] = []
    owners: dict[str, str] = {}
    for task in spec.tasks:
        main = _task_view(spec, task, task_versions[task.name])
        _claim(owners, main.name, f"tasks.{task.name}", spec)
        views.append(main)
        for f in task.fields:
            if f.is_list and (f.cite or f.fields):
                flat = _item_view(spec, task, f, main)
                _claim(owners, flat.name, f"tasks.{task.name}.fields.{f.name}", spec)
                views.append(flat)
    return ProfileViews(spec.name, version, tuple(views))


def _claim(owners: dict[str, str], name: str, key: str, spec: ProfileSpec) -> None:
    if name in owners:
        raise DeclarationError(
            spec.file, key, f"its view {name!r} has the same name as {owners[name]}'s; rename one"
        )
    owners[name] = key


def _task_view(spec: ProfileSpec, task: TaskSpec, version: str) -> ViewDef:
    name = view_name(spec.name, task.name)
    structure = json.dumps(task_structure(task), separators=(",", ":"))
    columns = [*BASE_COLUMNS, *task_columns(task)]
    select = ",\n       ".join(f"{expr} AS {_q(col)}" for col, _t, expr in columns)
    sql = (
        f"CREATE OR REPLACE VIEW {_q(name)} AS\n"
        f"SELECT {select}\n"
        f"FROM (SELECT *, from_json(result, {_lit(structure)}) AS t FROM task_results\n"
        f"      WHERE profile = {_lit(spec.name)} AND task = {_lit(task.name)} "
        f"AND task_version = {_lit(version)}\n"
        f"      QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY created_at DESC, model) = 1) AS r\n"
        f"LEFT JOIN documents AS d ON d.doc_id = r.doc_id"
    )
    return ViewDef(name, sql, tuple((c, t) for c, t, _e in columns), task.name)


def _item_view(spec: ProfileSpec, task: TaskSpec, field: FieldSpec, main: ViewDef) -> ViewDef:
    name = view_name(spec.name, task.name, field.name)
    base_types = dict(main.columns)
    columns = [(c, base_types[c], f"v.{_q(c)}") for c in FLAT_BASE]
    columns += [("item_no", "BIGINT", "i.item_no"), *item_columns(field)]
    select = ",\n       ".join(f"{expr} AS {_q(col)}" for col, _t, expr in columns)
    lst = f"v.{_q(field.name)}"
    sql = (
        f"CREATE OR REPLACE VIEW {_q(name)} AS\n"
        f"SELECT {select}\n"
        f"FROM {_q(main.name)} AS v,\n"
        f"     LATERAL (SELECT unnest({lst}) AS item, generate_subscripts({lst}, 1) AS item_no) AS i"
    )
    return ViewDef(name, sql, tuple((c, t) for c, t, _e in columns), task.name, field.name)


def _q(identifier: str) -> str:
    """A quoted SQL identifier (names are validated to [a-z0-9_], but may be keywords like `date`)."""
    return '"' + identifier.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
