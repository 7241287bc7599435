"""Where the store lives: a DuckDB file (the default), or a DuckLake whose catalog is in PostgreSQL.

`KIMIDOCS_DB` / `--db` take either a path or DuckDB's own ATTACH string for a lake, so what users
type is what they would type in the DuckDB CLI:

    KIMIDOCS_DB=data/kimidocs.duckdb
    KIMIDOCS_DB='ducklake:postgres:dbname=kimidocs host=db.internal user=kimidocs'
    KIMIDOCS_LAKE_DATA_PATH=/shared/lake/     (or s3://bucket/lake/; only needed to create the lake)

The part after `ducklake:postgres:` is a libpq connection string (key=value or a postgresql:// URL);
libpq's own PGPASSWORD / PGPASSFILE / PGSERVICE work as well, so a password never has to be in it.
When one is, `redact` hides it in everything we print or store.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from kimidocs.core.passwords import redact_passwords

PREFIX = "ducklake:postgres:"

# KIMIDOCS_DB and --db pass through pathlib, which turns "postgresql://h/db" into "postgresql:/h/db".
_COLLAPSED_URL = re.compile(r"^(postgres(?:ql)?:)/(?!/)")


def redact(text: str) -> str:
    """`text` with every libpq password (key=value or URL form) replaced by `***`."""
    return redact_passwords(text)


def is_lake(db: str | Path) -> bool:
    return str(db).strip().startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class LakeLocation:
    """A DuckLake with its catalog in a PostgreSQL database. `repr` and `str` never show a password."""

    conninfo: str  # libpq connection string of the catalog database
    data_path: str | None = None  # where data files go; read from the catalog once the lake exists

    @classmethod
    def parse(cls, db: str | Path, data_path: str | None = None) -> LakeLocation:
        text = str(db).strip()
        if not text.startswith(PREFIX) or not text[len(PREFIX) :].strip():
            raise ValueError(f"not a DuckLake location (expected {PREFIX}<libpq connection string>)")
        conninfo = _COLLAPSED_URL.sub(r"\1//", text[len(PREFIX) :].strip())
        return cls(conninfo, data_path or None)

    @property
    def attach_string(self) -> str:
        return PREFIX + self.conninfo

    @property
    def key(self) -> str:
        """A stable short name of this lake (local cache file names)."""
        return hashlib.sha256(self.conninfo.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return redact(self.attach_string)

    def __repr__(self) -> str:
        return f"LakeLocation({str(self)!r}, data_path={self.data_path!r})"


def shown_db(db: str | Path) -> str:
    """The database as messages and reports show it: a file's absolute path, a lake without password."""
    if is_lake(db):
        return str(LakeLocation.parse(db))
    return str(Path(db).expanduser().resolve())
