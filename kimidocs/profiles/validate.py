"""A task's fields -> a pydantic model (pydantic.create_model) that validates the model's answers.

Pydantic here because the answer is untrusted JSON. As lenient as `kimidocs.core.results.Summary`:
unknown keys are ignored, missing fields are null / empty, a bare value where a cited object was
asked for is wrapped, a single item where a list was asked for becomes a list, numbers where text
was asked for become text. Dates, numbers and money stay as written (text or number): the store
coerces them to DATE / BIGINT / DOUBLE / DECIMAL and keeps the text beside them, as it does for
summaries. Two things are refused, because a repair call can fix them and the columns cannot:
an enum value that is not declared (compared ignoring case, spaces, - and _), and a `required`
field that is null or empty: a top-level one in a final answer (map partials may lack it), a
member of a list's objects always (an item without it is no item, as a Summary key point
without its point).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from kimidocs.core.results import (
    CitationChecker,
    CitationReport,
    OutputInvalid,
    extract_json_object,
    validation_message,
)
from kimidocs.profiles.declaration import FieldSpec, TaskSpec, fold_enum

__all__ = ["AnswerModel", "answer_model", "check_answer_citations", "parse_answer", "validate_answer"]


class AnswerModel(BaseModel):
    """Base of every generated model: unknown keys are ignored (models add keys of their own)."""

    model_config = ConfigDict(extra="ignore")


class _CitedBase(AnswerModel):
    """Base of cited values and cited list items: `pages` and `evidence` are checked against the text."""


# ------------------------------------------------------------------------------------- coercions


def _to_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _to_number(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def _to_bool(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().casefold()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # kept as written; the store reads it as NULL and says so
    return value


def _to_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _to_pages(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, int | str):
        return [value]
    return value


def _wrap(value: Any) -> Any:
    """A bare value where {value, pages, evidence} was asked for."""
    if value is None or isinstance(value, dict):
        return value
    return {"value": value}


def _money(value: Any) -> Any:
    """A bare amount where {value, currency} was asked for; `amount` read as `value`."""
    if value is None:
        return None
    if isinstance(value, dict):
        if "value" not in value and "amount" in value:
            return {**value, "value": value["amount"]}
        return value
    return {"value": value}


def _enum_check(values: tuple[str, ...]) -> Any:
    canonical = {fold_enum(v): v for v in values}

    def check(value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return canonical[fold_enum(value)]
        except KeyError:
            raise ValueError(f"{value!r} is not one of {', '.join(values)}") from None

    return check


Text = Annotated[str | None, BeforeValidator(_to_text)]
Pages = Annotated[list[int], BeforeValidator(_to_pages)]
Number = Annotated[int | float | str | None, BeforeValidator(_to_number)]
Boolean = Annotated[bool | str | None, BeforeValidator(_to_bool)]


def _scalar_type(field: FieldSpec) -> Any:
    """The annotation of a bare value of `field`'s scalar type (nullable)."""
    if field.type in ("string", "text", "date"):
        return Text
    if field.type in ("integer", "number"):
        return Number
    if field.type == "boolean":
        return Boolean
    if field.type == "enum":
        return Annotated[str | None, BeforeValidator(_to_text), AfterValidator(_enum_check(field.values))]
    if field.type == "money":
        return Annotated[_money_model() | None, BeforeValidator(_money)]
    raise AssertionError(field.type)


@lru_cache(maxsize=1)
def _money_model() -> type[AnswerModel]:
    return create_model(
        "Money",
        __base__=AnswerModel,
        value=(Annotated[int | float | str, BeforeValidator(_to_number)], ...),
        currency=(Text, None),
    )


# ------------------------------------------------------------------------------------- models


@lru_cache(maxsize=256)
def answer_model(task: TaskSpec, *, partial: bool = False, prefix: str = "") -> type[AnswerModel]:
    """The pydantic model of one answer to `task`; `partial` for map partials (nothing required).

    Cached per (task, partial): a TaskSpec is a frozen record, so an edited task gets a new model.
    """
    base = _camel(prefix) + _camel(task.name) + ("Partial" if partial else "")
    fields: dict[str, Any] = {}
    for f in task.fields:
        annotation = _field_type(f, base)
        if f.required and not partial:
            fields[f.name] = (Annotated[annotation, AfterValidator(_non_empty(f.name))], ...)
        else:
            fields[f.name] = (annotation, Field(default_factory=list) if f.is_list else None)
    return create_model(base, __base__=AnswerModel, **fields)


def _field_type(field: FieldSpec, owner: str) -> Any:
    name = owner + _camel(field.name)
    if field.is_list:
        return Annotated[list[_item_type(field, name)], BeforeValidator(_to_list)]  # type: ignore[misc]
    if field.cite:
        wrap = _money if field.type == "money" else _wrap
        return Annotated[_cited_model(field, name) | None, BeforeValidator(wrap)]
    return _scalar_type(field)


def _item_type(field: FieldSpec, name: str) -> Any:
    if field.fields:
        members: dict[str, Any] = {}
        for f in field.fields:
            if f.is_list:
                assert f.items is not None
                members[f.name] = (
                    Annotated[list[_non_null(_scalar_type(f.items))], BeforeValidator(_to_list)],  # type: ignore[misc]
                    Field(default_factory=list),
                )
            elif f.required:  # an item without it is no item, in a partial too (as Summary's points)
                members[f.name] = (Annotated[_scalar_type(f), AfterValidator(_non_empty(f.name))], ...)
            else:
                members[f.name] = (_scalar_type(f), None)
        if field.cite:
            members |= {"pages": (Pages, Field(default_factory=list)), "evidence": (Text, None)}
        return create_model(name + "Item", __base__=_CitedBase if field.cite else AnswerModel, **members)
    assert field.items is not None
    if field.cite:
        wrap = _money if field.items.type == "money" else _wrap
        return Annotated[_cited_model(field.items, name + "Item"), BeforeValidator(wrap)]
    return _non_null(_scalar_type(field.items))


def _cited_model(field: FieldSpec, name: str) -> type[AnswerModel]:
    members: dict[str, Any] = {"pages": (Pages, Field(default_factory=list)), "evidence": (Text, None)}
    if field.type == "money":
        members["value"] = (Annotated[int | float | str, BeforeValidator(_to_number)], ...)
        members["currency"] = (Text, None)
    else:
        members["value"] = (_scalar_type(field), None)
    return create_model(name + "Cited", __base__=_CitedBase, **members)


def _non_null(annotation: Any) -> Any:
    """A list item: a null in a list is refused (one bad item rather than a silent hole)."""

    def refuse_none(value: Any) -> Any:
        if value is None:
            raise ValueError("a list item cannot be null")
        return value

    return Annotated[annotation, AfterValidator(refuse_none)]


def _non_empty(name: str) -> Any:
    def check(value: Any) -> Any:
        empty = value is None or value == [] or (isinstance(value, str) and not value.strip())
        empty = empty or (isinstance(value, _CitedBase) and getattr(value, "value", None) in (None, ""))
        if empty:
            raise ValueError(f"{name} is required")
        return value

    return check


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# ------------------------------------------------------------------------------------- parsing


def validate_answer(task: TaskSpec, obj: Mapping[str, Any], *, partial: bool = False) -> AnswerModel:
    """A decoded JSON object as a validated answer; raises `OutputInvalid` saying what is wrong."""
    try:
        return answer_model(task, partial=partial).model_validate(obj)
    except ValidationError as err:
        raise OutputInvalid(validation_message(err), "") from None


def parse_answer(task: TaskSpec, content: str, *, partial: bool = False) -> AnswerModel:
    """The model's text as a validated answer; raises `OutputInvalid(error, raw)` (fences tolerated)."""
    obj = extract_json_object(content)
    try:
        return answer_model(task, partial=partial).model_validate(obj)
    except ValidationError as err:
        raise OutputInvalid(validation_message(err), content) from None


# ------------------------------------------------------------------------------------- citations


def check_answer_citations(
    answer: AnswerModel, pages: Mapping[int, str], allowed: range | set[int] | frozenset[int]
) -> tuple[AnswerModel, CitationReport]:
    """`answer` with bad citations removed, as `kimidocs.core.results.check_citations` does for summaries.

    Every cited value or item (anything with `pages`): pages that do not exist or were not read are
    dropped; a quote found on none of its valid pages (or across two consecutive ones) drops the
    whole item from its list, or the cited value (it becomes null): its text came from elsewhere.
    """
    checker = CitationChecker(pages, allowed)

    def fix(item: _CitedBase) -> _CitedBase | None:
        fixed: _CitedBase | None = checker.fix(item)
        return fixed

    update: dict[str, Any] = {}
    for name in type(answer).model_fields:
        value = getattr(answer, name)
        if isinstance(value, _CitedBase):
            update[name] = fix(value)
        elif isinstance(value, list) and any(isinstance(v, _CitedBase) for v in value):
            update[name] = [fixed for v in value if (fixed := fix(v)) is not None]
    report = checker.report()
    return answer.model_copy(update=update), report
