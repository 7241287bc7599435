"""The commented starter profile `kimidocs profiles new NAME` writes. It must load as is
(tests/test_profiles_cli.py checks it), so a new user starts from something that runs."""

from __future__ import annotations

STARTER = '''\
# A kimidocs profile: what to ask about every document, declared once.
# From this file kimidocs derives the JSON Schema sent to the model, the validation of its
# answers, and typed DuckDB views (profile_<profile>_<task>). Check it with:
#     kimidocs profiles check profiles/{name}
# Editing a task re-runs only that task; editing `instructions` below re-runs every task.

description = "What this profile extracts, in one line (shown by `kimidocs profiles list`)."

# Shared by every task (sent once per document, so it is read from the provider's cache).
instructions = """
The documents are ... (say what they are and how to read them).
"""

# Optional output sizes (tokens) of a final answer and of a partial answer of a long document:
# max_output_tokens = 4096
# partial_output_tokens = 1536

# One [[tasks]] block per question; each is one call per document (more for long documents).
[[tasks]]
name = "overview"                       # lower-case letters, digits and _
instructions = "Give the document's title, its date and its main points."

# Fields: name = "type" or name = {{type = "...", cite = true, required = true, description = "..."}}
# Types: string, text, integer, number, boolean, date, money (value + ISO currency),
#        enum (values = [...]), list (items = "<type>", or fields = {{...}} for a list of objects).
# cite = true: the value (or each list item) carries the pages it comes from and a short quote.
[tasks.fields]
title = {{type = "string", cite = true, description = "the title as written"}}
document_date = {{type = "date", cite = true, description = "the date the document is dated"}}
language = {{type = "enum", values = ["en", "de", "fr", "zh", "other"]}}

# A long field can be written as its own table (and a list's objects as a sub-table):
[tasks.fields.main_points]
type = "list"
cite = true
description = "the main points, most important first"

[tasks.fields.main_points.fields]
point = {{type = "text", required = true}}
importance = {{type = "enum", values = ["low", "medium", "high"]}}

# A second task: uncomment to add it.
# [[tasks]]
# name = "amounts"
# instructions = "List every amount of money the document names, with what it is for."
# [tasks.fields]
# amounts = {{type = "list", cite = true, fields = {{amount = "money", what = "string"}}}}
'''


def starter_profile(name: str) -> str:
    """The starter `profile.toml` for a profile called `name`."""
    return STARTER.format(name=name)
