"""Free questions over one document (`kimidocs ask`) as a declared profile built in code.

Each question is a task whose answer is one cited text field,

    {"answer": {"value": "<text>", "pages": [<int>, ...], "evidence": "<verbatim quote>"}}

so the schema, the pydantic model, map-reduce partials and merges, and the citation check are the
declared-profile machinery's, unchanged. The system message carries no question: every question
over a document shares `[system][document]` and reads it from the prefix cache; the question goes
in the last message with the schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import MappingProxyType

from kimidocs.profiles.catalog import DeclaredProfile, ProfileLocation
from kimidocs.profiles.declaration import FieldSpec, ProfileSpec, TaskSpec
from kimidocs.profiles.errors import ProfileError
from kimidocs.profiles.prompt import TEMPLATES_DIR, render_stages, render_system, task_version

PROFILE = "ask"
ANSWER = "answer"
MAX_QUESTION_CHARS = 2_000
INSTRUCTIONS = (
    "Answer the user's question about the document from the document alone. If the document does "
    "not answer it, say so in the answer and cite no pages."
)
_ANSWER_FIELD = FieldSpec(
    name=ANSWER,
    type="text",
    description="the answer to the question, in a few sentences",
    cite=True,
    required=True,
)


def task_name(index: int) -> str:
    """The task of the `index`-th question (from 0): q1, q2, ..."""
    return f"q{index + 1}"


def question_task(question: str, index: int) -> TaskSpec:
    """One question as a task with a single cited answer field."""
    text = " ".join(question.split())
    if not text:
        raise ProfileError(f"question {index + 1} is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise ProfileError(f"question {index + 1} is longer than {MAX_QUESTION_CHARS} characters")
    return TaskSpec(
        name=task_name(index),
        instructions=f"{INSTRUCTIONS}\nQuestion: {text}",
        fields=(_ANSWER_FIELD,),
        max_output_tokens=1024,
        partial_output_tokens=512,
    )


def question_profile(questions: Sequence[str]) -> DeclaredProfile:
    """A `DeclaredProfile` named `ask` with one task per question (in order)."""
    if not questions:
        raise ProfileError("ask needs at least one question")
    tasks = tuple(question_task(q, i) for i, q in enumerate(questions))
    spec = ProfileSpec(
        name=PROFILE,
        description="ad hoc questions over one document",
        instructions="",  # nothing question-specific in the system message: it stays cacheable
        tasks=tasks,
        file="<kimidocs ask>",
    )
    versions = {t.name: task_version(spec, t) for t in tasks}
    return DeclaredProfile(
        spec=spec,
        location=ProfileLocation(PROFILE, TEMPLATES_DIR, builtin=True, kind="declared"),
        version=_profile_version(versions),
        system=render_system(spec),
        task_versions=MappingProxyType(versions),
        stages=MappingProxyType({t.name: MappingProxyType(render_stages(spec, t)) for t in tasks}),
    )


def _profile_version(task_versions: dict[str, str]) -> str:
    text = "\n".join(f"{k}={v}" for k, v in task_versions.items())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
