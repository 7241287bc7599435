"""profile.toml -> records: every accepted form, and every malformed one named by file and key."""

from __future__ import annotations

import re

import pytest

from kimidocs.profiles import DeclarationError, ProfileError, parse_profile
from kimidocs.profiles.declaration import column_suffixes

GOOD = """
description = "test"
instructions = "shared"
max_output_tokens = 2000

[[tasks]]
name = "one"
instructions = "do one"
partial_output_tokens = 5000
[tasks.fields]
title = "string"
body = {type = "text", description = "the body"}
count = {type = "integer", required = true}
ratio = "number"
flag = "boolean"
signed = {type = "date", cite = true}
price = {type = "money", cite = true}
kind = {type = "enum", values = ["a", "b c"]}
tags = {type = "list", items = "string"}
dates = {type = "list", cite = true, items = {type = "date"}}
levels = {type = "list", items = {type = "enum", values = ["low", "high"]}}

[tasks.fields.people]
type = "list"
cite = true
[tasks.fields.people.fields]
name = {type = "string", required = true}
paid = "money"
aliases = {type = "list", items = "string"}

[[tasks]]
name = "two"
instructions = "do two"
fields = {x = "string"}
"""


def parse(text: str):
    return parse_profile(text, name="demo", file="profiles/demo/profile.toml")


def test_every_field_form_is_read() -> None:
    spec = parse(GOOD)
    assert spec.task_names == ("one", "two")
    one = spec.task("one")
    assert [f.name for f in one.fields][:3] == ["title", "body", "count"]  # declaration order
    assert one.field("title").type == "string"
    assert one.field("body").description == "the body"
    assert one.field("count").required
    assert one.field("signed").cite and one.field("price").type == "money"
    assert one.field("kind").values == ("a", "b c")
    assert one.field("tags").items is not None and one.field("tags").items.type == "string"
    assert one.field("dates").cite and one.field("dates").items.type == "date"
    assert one.field("levels").items.values == ("low", "high")
    people = one.field("people")
    assert people.is_object_list and people.cite
    assert [f.name for f in people.fields] == ["name", "paid", "aliases"]
    assert people.fields[2].is_list
    # output sizes: profile default, task override, partial never above the final size
    assert (one.max_output_tokens, one.partial_output_tokens) == (2000, 2000)
    assert spec.task("two").max_output_tokens == 2000


def test_generated_columns_per_type() -> None:
    one = parse(GOOD).task("one")
    assert column_suffixes(one.field("title")) == ("",)
    assert column_suffixes(one.field("signed")) == ("", "_precision", "_text", "_pages", "_evidence")
    assert column_suffixes(one.field("price")) == ("", "_currency", "_text", "_pages", "_evidence")
    assert column_suffixes(one.field("tags")) == ("",)


def test_an_unknown_task_is_named() -> None:
    with pytest.raises(DeclarationError, match=r"tasks\.three: no such task \(tasks: one, two\)"):
        parse(GOOD).task("three")


T = '[[tasks]]\nname="a"\ninstructions="i"\n'  # a task, fields to follow
BAD = [
    ("x = ", "", "not valid TOML"),
    ('description = "d"', "tasks", "at least one task"),
    ("tasks = []", "tasks", "at least one task"),
    ('colour = "red"\n[[tasks]]\nname="a"\ninstructions="i"\nfields={x="string"}', "colour", "unknown key"),
    ('[[tasks]]\ninstructions="i"\nfields={x="string"}', r"tasks\[0\]\.name", "needs a name"),
    ('[[tasks]]\nname="A b"\ninstructions="i"\nfields={x="string"}', r"tasks\[0\]\.name", "needs a name"),
    ('[[tasks]]\nname="a"\nfields={x="string"}', r"tasks\.a\.instructions", "required and must be text"),
    ('[[tasks]]\nname="a"\ninstructions="  "\nfields={x="string"}', r"tasks\.a\.instructions", "must say"),
    ('[[tasks]]\nname="a"\ninstructions="i"', r"tasks\.a\.fields", "at least one field"),
    (T + 'fields={x="strng"}', r"tasks\.a\.fields\.x\.type", "must be one of"),
    (T + 'fields={x={type="date", cites=true}}', r"fields\.x\.cites", "unknown key"),
    (T + 'fields={x={type="date", cite="yes"}}', r"fields\.x\.cite", "true or false"),
    (T + 'fields={x={type="enum"}}', r"fields\.x\.values", "non-empty list"),
    (T + 'fields={x={type="enum", values=["A", "a"]}}', r"fields\.x\.values", "must differ"),
    (T + 'fields={x={type="string", values=["a"]}}', r"fields\.x\.values", "only an enum"),
    (T + 'fields={x={type="string", items="date"}}', r"fields\.x\.items", "only a list"),
    (T + 'fields={x={type="list"}}', r"fields\.x$", "either items"),
    (T + 'fields={x={type="list", items="list"}}', r"fields\.x\.items\.type", "must be one of"),
    (T + 'fields={x={type="list", fields={}}}', r"fields\.x\.fields", "at least one"),
    (T + 'fields={x={type="list", fields={y={type="list", fields={z="string"}}}}}', r"x\.fields\.y\.fields",
     "cannot sit inside"),
    (T + 'fields={x={type="list", fields={y={type="string", cite=true}}}}', r"x\.fields\.y\.cite",
     "belongs on the list"),
    (T + 'fields={doc_id="string"}', r"fields\.doc_id", "reserved"),
    (T + 'fields={Bad="string"}', r"fields\.Bad", "lower-case"),
    (T + 'fields={x={type="date"}, x_text="string"}', r"fields\.x_text", "collides"),
    (T + 'fields={x="string"}\n' + T + 'fields={y="string"}', r"tasks\[1\]\.name", "declared twice"),
    ('max_output_tokens = 10\n' + T + 'fields={x="string"}', "max_output_tokens", "at least 64"),
    (T + 'max_output_tokens="big"\nfields={x="string"}', r"tasks\.a\.max_output_tokens", "integer"),
    (T + 'fields={x=3}', r"fields\.x", "type name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "problem"), BAD, ids=[b[2] + ":" + b[1] for b in BAD])
def test_a_malformed_profile_names_file_key_and_problem(text: str, key: str, problem: str) -> None:
    with pytest.raises(DeclarationError) as info:
        parse(text)
    err = info.value
    assert err.file == "profiles/demo/profile.toml"
    assert str(err).startswith("profiles/demo/profile.toml")
    assert re.search(key, err.key) if key else err.key == "", err.key
    assert problem in err.problem
    assert isinstance(err, ProfileError)  # what the pipeline and `kimidocs plan` already catch


def test_a_bad_profile_name_is_refused() -> None:
    with pytest.raises(DeclarationError, match="profile name 'My-Profile'"):
        parse_profile(T + 'fields={x="string"}', name="My-Profile", file="f")
