"""Prompt profiles as data files, and the one function that loads them.

A profile is a folder `prompts/<name>/`:

    system.md      fixed instructions; `$schema` is replaced by schema.json, `$schema_compact` by its
                   `compact_schema` rendering (half the tokens); the system message is identical for
                   every call of the profile, so the provider's prefix cache holds it
    task.md        the task of a single call over a whole document
    map.md         the task of a map call over one chunk ($part $parts $first_page $last_page $total_pages)
    reduce.md      the task of a reduce call over partials ($first_page $last_page $total_pages)
    repair.md      the follow-up after unusable output ($error)
    pack.md        the task of a call over several small documents ($count)
    schema.json    JSON Schema of the output (kimidocs/core/results.py's `Summary` is its pydantic twin)
    profile.toml   max_output_tokens, partial_output_tokens, description

`version` is a hash of every file's name and bytes (and of the rendered system message): editing
a prompt changes the version, and the work key (doc, profile, version, model) then asks for a fresh
analysis. Data and a loader only: this package imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "PROFILES_DIR",
    "TASK_FILES",
    "Profile",
    "ProfileError",
    "available_profiles",
    "compact_schema",
    "load_profile",
]

PROFILES_DIR = Path(__file__).parent
TASK_FILES = ("task", "map", "reduce", "repair", "pack")  # stage name -> <stage>.md ("task" = single)
_REQUIRED = ("system.md", "schema.json", "profile.toml", *(f"{t}.md" for t in TASK_FILES))


class ProfileError(ValueError):
    """A profile that does not exist or whose files are incomplete or malformed."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One loaded profile. `tasks` maps a stage name (see TASK_FILES) to its template text."""

    name: str
    version: str
    system: str
    tasks: Mapping[str, str] = field(hash=False)
    schema: Mapping[str, Any] = field(hash=False)
    max_output_tokens: int
    partial_output_tokens: int
    description: str = ""

    def task(self, stage: str, **values: object) -> str:
        """The task text of `stage` with `$name` placeholders filled from `values`."""
        try:
            template = self.tasks[stage]
        except KeyError:
            raise ProfileError(f"profile {self.name!r} has no task {stage!r}") from None
        return string.Template(template).safe_substitute({k: str(v) for k, v in values.items()}).strip()


def available_profiles() -> list[str]:
    """Names of the hand-written profile folders shipped in this package (`_declared/` holds the
    templates of declared profiles, see kimidocs.profiles, and is not one)."""
    return sorted(
        p.name for p in PROFILES_DIR.iterdir() if not p.name.startswith("_") and (p / "system.md").is_file()
    )


def _shape(schema: Any) -> str:
    """One schema node as a TypeScript-like type: `{a: string, b?: int[]}`, descriptions in brackets."""
    if not isinstance(schema, dict):
        return "any"
    kind = schema.get("type")
    if schema.get("enum"):
        return "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if kind == "object" or "properties" in schema:
        return "{" + ", ".join(_fields(schema)) + "}"
    if kind == "array" or "items" in schema:
        inner = _shape(schema.get("items") or {})
        return f"{inner}[]" if inner.startswith("{") or "|" not in inner else f"({inner})[]"
    kinds = kind if isinstance(kind, list) else [kind or "any"]
    return "|".join({"integer": "int"}.get(k, k) for k in kinds)


def _fields(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required") or ())
    out = []
    for name, sub in (schema.get("properties") or {}).items():
        text = f"{name}{'' if name in required else '?'}: {_shape(sub)}"
        note = sub.get("description") if isinstance(sub, dict) else None
        out.append(f"{text} ({note})" if note else text)
    return out


def compact_schema(schema: Mapping[str, Any]) -> str:
    """The output shape a JSON Schema describes, in about half its tokens: one top-level field a line,
    `?` after an optional name, `int[]` for arrays, `a|null` for unions, descriptions in brackets."""
    return "{\n" + "\n".join(_fields(dict(schema))) + "\n}"


@cache
def load_profile(name: str = "summary") -> Profile:
    """Read `prompts/<name>/`; raise `ProfileError` naming what is missing or wrong."""
    folder = PROFILES_DIR / name
    if not name.isidentifier() or name.startswith("_") or not folder.is_dir():
        raise ProfileError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    missing = [f for f in _REQUIRED if not (folder / f).is_file()]
    if missing:
        raise ProfileError(f"profile {name!r} is missing {', '.join(missing)}")
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    digest = hashlib.sha256()
    for fname, data in files.items():
        digest.update(fname.encode() + b"\0" + hashlib.sha256(data).digest())
    try:
        schema = json.loads(files["schema.json"])
        config = tomllib.loads(files["profile.toml"].decode("utf-8"))
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ProfileError(f"profile {name!r}: {err}") from err
    schema_text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    system = (
        string.Template(files["system.md"].decode("utf-8"))
        .safe_substitute(schema=schema_text, schema_compact=compact_schema(schema))
        .strip()
    )
    digest.update(b"rendered system\0" + system.encode("utf-8"))  # a loader change that alters what is sent
    tasks = {t: files[f"{t}.md"].decode("utf-8") for t in TASK_FILES}
    try:
        max_out = int(config["max_output_tokens"])
        partial_out = int(config["partial_output_tokens"])
    except (KeyError, TypeError, ValueError) as err:
        raise ProfileError(f"profile {name!r}: profile.toml needs integer {err}") from err
    return Profile(
        name=name,
        version=digest.hexdigest()[:12],
        system=system,
        tasks=MappingProxyType(tasks),
        schema=MappingProxyType(schema),
        max_output_tokens=max_out,
        partial_output_tokens=min(partial_out, max_out),
        description=str(config.get("description", "")),
    )
