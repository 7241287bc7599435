"""Profiles users declare: one `profile.toml` -> the JSON Schema sent to the model, the pydantic
model that validates its answers, and the typed DuckDB views analysts query. Pure: no network,
no Prefect, no duckdb (views.py writes SQL text; kimidocs.store runs it).

    declaration.py   profile.toml -> ProfileSpec / TaskSpec / FieldSpec (strict; DeclarationError)
    schema.py        TaskSpec -> JSON Schema (final answers and map partials)
    validate.py      TaskSpec -> pydantic model; parse and validate answers; check citations
    prompt.py        system and per-task texts from prompts/_declared/; profile and task versions
    catalog.py       search path (KIMIDOCS_PROFILES, ./profiles, built-ins), shadowing, loading
    views.py         ProfileSpec -> CREATE VIEW statements over task_results
    merge.py         a task's answers rendered, trimmed, merged without the model (map-reduce)
    starter.py       the commented starter profile of `kimidocs profiles new`
"""

from kimidocs.profiles.catalog import (
    DeclaredProfile,
    ProfileLocation,
    ResolvedProfile,
    discover,
    load_declared,
    load_folder,
    locate,
    planning_profile,
    resolve,
    search_path,
    version_of,
)
from kimidocs.profiles.declaration import FieldSpec, ProfileSpec, TaskSpec, parse_profile
from kimidocs.profiles.errors import DeclarationError, ProfileError
from kimidocs.profiles.merge import answer_json, merge_answers, trim_answer
from kimidocs.profiles.questions import question_profile
from kimidocs.profiles.schema import task_schema
from kimidocs.profiles.validate import (
    AnswerModel,
    answer_model,
    check_answer_citations,
    parse_answer,
    validate_answer,
)
from kimidocs.profiles.views import ProfileViews, ViewDef, profile_views


def views_of(profile: DeclaredProfile) -> ProfileViews:
    """The typed views of a loaded profile (what `Store.refresh_profile_views` takes)."""
    return profile_views(profile.spec, profile.version, profile.task_versions)


__all__ = [
    "AnswerModel",
    "DeclarationError",
    "DeclaredProfile",
    "FieldSpec",
    "ProfileError",
    "ProfileLocation",
    "ProfileSpec",
    "ProfileViews",
    "ResolvedProfile",
    "TaskSpec",
    "ViewDef",
    "answer_json",
    "answer_model",
    "check_answer_citations",
    "discover",
    "load_declared",
    "load_folder",
    "locate",
    "merge_answers",
    "parse_answer",
    "parse_profile",
    "planning_profile",
    "profile_views",
    "question_profile",
    "resolve",
    "search_path",
    "task_schema",
    "trim_answer",
    "validate_answer",
    "version_of",
    "views_of",
]
