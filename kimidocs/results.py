"""Model output -> validated `Summary`. Pydantic here because this JSON is untrusted.

The schema is the analysts' contract (DESIGN §4 `summaries`): the same field types for every
document, page numbers of the original document on every cited item.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KeyPoint(_Item):
    point: str
    pages: list[int] = Field(default_factory=list)
    evidence: str | None = None  # a short quote from the cited page, checked when present


class Entity(_Item):
    name: str
    type: str = "other"


class DateItem(_Item):
    date: str  # as written or ISO; the store parses it to DATE where it can
    what: str = ""
    pages: list[int] = Field(default_factory=list)


class Amount(_Item):
    value: str | float | int  # the store coerces to DECIMAL where it can
    currency: str | None = None
    what: str = ""
    pages: list[int] = Field(default_factory=list)


class Summary(_Item):
    """The structured result of the `summary` profile (also the shape of map partials)."""

    title: str = ""
    document_type: str = ""
    language: str = ""
    summary: str
    key_points: list[KeyPoint] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    dates: list[DateItem] = Field(default_factory=list)
    amounts: list[Amount] = Field(default_factory=list)
