"""The numbered migrations, made fit for DuckLake: one source of truth for the schema.

DuckLake supports NOT NULL but no PRIMARY KEY, UNIQUE, FOREIGN KEY or CHECK constraints and no
indexes (ducklake.select, "Constraints" and "Unsupported Features"). The migrations stay written for
DuckDB, where the keys guard the single-file store; on a lake the same files run after `translate`
strips what DuckLake refuses. A column-level PRIMARY KEY becomes NOT NULL (what it implied), a
table-level one is dropped (its columns are NOT NULL already). Uniqueness is then kept by the writers
(see pglocks.py). The store's upserts are written as delete+insert, so no ON CONFLICT is needed.
"""

from __future__ import annotations

import re

_COMMENT = re.compile(r"--[^\n]*")
_INDEX = re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\b[^;]*;?", re.IGNORECASE)
_TABLE_KEY = re.compile(r",\s*(?:PRIMARY\s+KEY|UNIQUE)\s*\([^)]*\)", re.IGNORECASE)
_NOT_NULL_KEY = re.compile(r"\bNOT\s+NULL\s+PRIMARY\s+KEY\b", re.IGNORECASE)
_COLUMN_KEY = re.compile(r"\bPRIMARY\s+KEY\b", re.IGNORECASE)
_COLUMN_UNIQUE = re.compile(r"\s+UNIQUE\b(?!\s*\()", re.IGNORECASE)
_UPSERT = re.compile(r"\bON\s+CONFLICT\b", re.IGNORECASE)


class UnsupportedOnLake(ValueError):
    """A migration uses something a translation cannot express on DuckLake."""


def translate(sql: str) -> str:
    """`sql` (a migration) without the constraints and indexes DuckLake refuses."""
    text = _COMMENT.sub("", sql)
    if _UPSERT.search(text):
        raise UnsupportedOnLake("ON CONFLICT needs a key: write the upsert as DELETE + INSERT")
    text = _INDEX.sub("", text)
    text = _TABLE_KEY.sub("", text)
    text = _NOT_NULL_KEY.sub("NOT NULL", text)
    text = _COLUMN_KEY.sub("NOT NULL", text)
    return _COLUMN_UNIQUE.sub("", text)
