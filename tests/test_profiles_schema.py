"""One declaration -> the JSON Schema sent to the model and the pydantic model that validates the
answer, for every field type; lenient where today's Summary is, strict on enums and required fields."""

from __future__ import annotations

import pytest

from kimidocs.core.results import OutputInvalid
from kimidocs.profiles import answer_model, check_answer_citations, parse_answer, parse_profile, task_schema
from kimidocs.profiles.validate import validate_answer

DECL = """
[[tasks]]
name = "all"
instructions = "everything"
[tasks.fields]
title = {type = "string", description = "the title"}
body = "text"
count = "integer"
ratio = "number"
flag = "boolean"
day = "date"
price = "money"
kind = {type = "enum", values = ["buyer", "service provider"]}
signed = {type = "date", cite = true}
fee = {type = "money", cite = true}
law = {type = "string", cite = true, required = true}
tags = {type = "list", items = "string"}
dates = {type = "list", cite = true, items = "date"}
people = {type = "list", cite = true, fields = {name = {type = "string", required = true}, paid = "money", role = {type = "enum", values = ["a", "b"]}, aliases = {type = "list", items = "string"}}}
"""  # noqa: E501

SPEC = parse_profile(DECL, name="demo", file="demo/profile.toml")
TASK = SPEC.task("all")


def test_schema_types_per_field() -> None:
    schema = task_schema(SPEC, TASK)
    props = schema["properties"]
    assert schema["title"] == "demo.all" and schema["additionalProperties"] is False
    assert schema["required"] == ["law"]
    assert props["title"] == {"type": ["string", "null"], "description": "the title"}
    assert props["count"]["type"] == ["integer", "null"]
    assert props["ratio"]["type"] == ["number", "null"]
    assert props["flag"]["type"] == ["boolean", "null"]
    assert props["day"]["type"] == ["string", "null"] and "ISO 8601" in props["day"]["description"]
    assert props["price"]["type"] == ["object", "null"]
    assert set(props["price"]["properties"]) == {"value", "currency"}
    assert props["kind"]["enum"] == ["buyer", "service provider", None]
    assert set(props["signed"]["properties"]) == {"value", "pages", "evidence"}
    assert props["signed"]["required"] == ["value", "pages"]
    assert set(props["fee"]["properties"]) == {"value", "currency", "pages", "evidence"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert set(props["dates"]["items"]["properties"]) == {"value", "pages", "evidence"}
    item = props["people"]["items"]
    assert set(item["properties"]) == {"name", "paid", "role", "aliases", "pages", "evidence"}
    assert item["required"] == ["name", "pages"]
    assert item["properties"]["aliases"] == {"type": "array", "items": {"type": "string"}}


def test_partial_schema_requires_nothing() -> None:
    assert "required" not in task_schema(SPEC, TASK, partial=True)
    assert task_schema(SPEC, TASK, partial=True)["properties"] == task_schema(SPEC, TASK)["properties"]


FULL = {
    "title": "T",
    "body": "B",
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "day": "2024-01-05",
    "price": {"value": 10, "currency": "EUR"},
    "kind": "buyer",
    "signed": {"value": "5 Jan 2024", "pages": [1], "evidence": "signed"},
    "fee": {"value": "$5", "currency": None, "pages": [2]},
    "law": {"value": "German law", "pages": [2]},
    "tags": ["x", "y"],
    "dates": [{"value": "2024", "pages": [1]}],
    "people": [{"name": "Ann", "paid": {"value": 1}, "role": "a", "aliases": ["A"], "pages": [1]}],
}


def test_a_full_answer_round_trips() -> None:
    answer = validate_answer(TASK, FULL)
    dumped = answer.model_dump(mode="json")
    assert dumped["signed"] == {"value": "5 Jan 2024", "pages": [1], "evidence": "signed"}
    assert dumped["fee"] == {"value": "$5", "currency": None, "pages": [2], "evidence": None}
    assert dumped["people"][0]["paid"] == {"value": 1, "currency": None}
    assert validate_answer(TASK, dumped).model_dump(mode="json") == dumped


def test_lenient_where_summary_is() -> None:
    answer = validate_answer(
        TASK,
        {
            "law": "German law",  # bare value for a cited field: wrapped
            "title": 2024,  # a number where text was asked for
            "count": "12 months",  # kept as written: the store coerces (and warns)
            "flag": "Yes",
            "price": 99.5,  # bare amount for money
            "fee": {"amount": 5, "pages": 3},  # `amount` for value, a page number for a list
            "kind": "Service-Provider",  # case, spaces, - and _ do not count
            "tags": "solo",  # one item for a list
            "dates": None,
            "people": {"name": "Bob"},
            "unknown": "ignored",
        },
    )
    assert answer.law.value == "German law" and answer.law.pages == []
    assert answer.title == "2024"
    assert answer.count == "12 months"
    assert answer.flag is True
    assert answer.price.value == 99.5
    assert (answer.fee.value, answer.fee.pages) == (5, [3])
    assert answer.kind == "service provider"
    assert answer.tags == ["solo"] and answer.dates == []
    assert answer.people[0].name == "Bob" and answer.people[0].pages == []
    assert answer.body is None and answer.day is None


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"kind": "seller"}, "kind"),  # not a declared value
        ({"law": None}, "law"),  # required
        ({"law": {"value": "", "pages": [1]}}, "law"),  # required, empty
        ({"people": [{"role": "a"}]}, "people.0.name"),  # a required member of an object
        ({"tags": [["nested"]]}, "tags.0"),
        ({"people": [{"name": "A", "role": "z"}]}, "people.0.role"),
        ({"title": {"an": "object"}}, "title"),
    ],
)
def test_what_a_repair_can_fix_is_refused(patch: dict, where: str) -> None:
    with pytest.raises(OutputInvalid, match=r"schema validation failed: " + where.replace(".", r"\.")):
        validate_answer(TASK, FULL | patch)


def test_map_partials_need_no_required_field() -> None:
    assert validate_answer(TASK, {}, partial=True).law is None
    with pytest.raises(OutputInvalid, match="law"):
        validate_answer(TASK, {})
    assert answer_model(TASK) is answer_model(TASK)  # derived once per task


def test_parse_answer_reads_fenced_json_and_keeps_raw() -> None:
    content = '```json\n{"law": "x", "tags": ["a"]}\n```'
    assert parse_answer(TASK, content).tags == ["a"]
    with pytest.raises(OutputInvalid) as info:
        parse_answer(TASK, '{"kind": "nope"}')
    assert info.value.raw == '{"kind": "nope"}'


def test_citations_of_declared_answers_are_checked() -> None:
    pages = {1: "Signed on 5 January 2024 by Ann.", 2: "Governed by German law. Fee $5."}
    answer = validate_answer(
        TASK,
        FULL
        | {
            "signed": {"value": "5 Jan 2024", "pages": [1, 9], "evidence": "Signed on 5 January 2024"},
            "law": {"value": "German law", "pages": [1], "evidence": "governed by german law"},
            "people": [
                {"name": "Ann", "pages": [1], "evidence": "by Ann"},
                {"name": "Eve", "pages": [2], "evidence": "Eve signs too"},
            ],
        },
    )
    fixed, report = check_answer_citations(answer, pages, range(1, 3))
    assert fixed.signed.pages == [1]  # page 9 does not exist
    assert fixed.law is None  # quoted from page 2 but cites page 1
    assert [p.name for p in fixed.people] == ["Ann"]  # Eve's quote is on no page
    assert report.bad_pages == (9,) and report.evidence_dropped == 2
    assert fixed.title == "T"  # uncited values untouched
