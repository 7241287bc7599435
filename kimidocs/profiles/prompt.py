"""A declaration -> the texts sent to the model, and the version hashes derived from them. Pure.

Every task of a profile shares one system message (the generic rules in prompts/_declared/system.md
plus the profile's shared `instructions`); the task's instructions and its JSON Schema go in the
last message. So all tasks over one document share `[system][document]`, and tasks 2..N read the
document at the cache-hit price (DESIGN §10).

Versions:
- profile version: hash of the profile folder's files (names and bytes) and of the templates;
- task version: hash of everything that reaches the model for that task — the rendered system
  message, the task's name, instructions, fields (so its schema), output sizes and the stage
  templates. Editing one task changes only that task's version; editing the shared instructions
  changes every task's.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from kimidocs.profiles.declaration import ProfileSpec, TaskSpec
from kimidocs.profiles.schema import task_schema
from prompts import PROFILES_DIR

TEMPLATES_DIR = PROFILES_DIR / "_declared"
STAGES = ("task", "map", "reduce", "repair", "pack")  # the keys of prompts.Profile.tasks
_STAGE_FILES = {
    "task": "single.md",
    "map": "map.md",
    "reduce": "reduce.md",
    "repair": "repair.md",
    "pack": "pack.md",
}
VERSION_CHARS = 12


@cache
def templates() -> Mapping[str, str]:
    """The generic templates: "system" and one per stage (read once per process)."""
    files = {"system": "system.md", **_STAGE_FILES}
    return {key: (TEMPLATES_DIR / name).read_text(encoding="utf-8") for key, name in files.items()}


def render_system(spec: ProfileSpec, tmpl: Mapping[str, str] | None = None) -> str:
    """The system message shared by every task of the profile."""
    tmpl = tmpl or templates()
    shared = f"\nAbout these documents:\n{spec.instructions}" if spec.instructions else ""
    return string.Template(tmpl["system"]).safe_substitute(instructions=shared).strip()


def schema_text(spec: ProfileSpec, task: TaskSpec, *, partial: bool) -> str:
    """The schema as sent: compact JSON, UTF-8 kept."""
    return json.dumps(task_schema(spec, task, partial=partial), ensure_ascii=False, separators=(",", ":"))


def render_stages(spec: ProfileSpec, task: TaskSpec, tmpl: Mapping[str, str] | None = None) -> dict[str, str]:
    """The last-message templates of `task`, one per stage, with the task's parts filled in.

    What is left are the per-call placeholders ($part, $total_pages, $error, ...), filled by
    `prompts.Profile.task`. Text we fill in has its `$` doubled so it survives that second pass.
    """
    tmpl = tmpl or templates()
    final, partial = schema_text(spec, task, partial=False), schema_text(spec, task, partial=True)
    out = {}
    for stage in STAGES:
        values = {
            "task": _escape(task.name),
            "instructions": _escape(task.instructions),
            "schema": _escape(partial if stage == "map" else final),
        }
        out[stage] = string.Template(tmpl[stage]).safe_substitute(values)
    return out


def task_version(spec: ProfileSpec, task: TaskSpec, tmpl: Mapping[str, str] | None = None) -> str:
    """Hash of all that reaches the model for `task` (see the module docstring)."""
    tmpl = tmpl or templates()
    payload = {
        "system": render_system(spec, tmpl),
        "task": {
            "name": task.name,
            "instructions": task.instructions,
            "fields": [f.canonical() for f in task.fields],
            "max_output_tokens": task.max_output_tokens,
            "partial_output_tokens": task.partial_output_tokens,
        },
        "stages": render_stages(spec, task, tmpl),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def profile_version(files: Mapping[str, bytes], tmpl: Mapping[str, str] | None = None) -> str:
    """Hash of the profile's files (relative name -> bytes) and of the generic templates."""
    tmpl = tmpl or templates()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(files[name]).digest())
    for key in sorted(tmpl):
        digest.update(b"template " + key.encode() + b"\0" + hashlib.sha256(tmpl[key].encode()).digest())
    return digest.hexdigest()[:VERSION_CHARS]


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under a profile folder (relative POSIX name -> bytes), hidden files and caches skipped."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            out[rel.as_posix()] = path.read_bytes()
    return out


def _escape(text: str) -> str:
    return text.replace("$", "$$")
