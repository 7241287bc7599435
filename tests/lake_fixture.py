"""pytest plugin: a fresh DuckLake per test, its catalog a new database in the session's PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from postgres_fixture import PostgresServer


@dataclass(frozen=True)
class Lake:
    """Where a test's lake lives: `db` is what KIMIDOCS_DB / --db take."""

    db: str
    data_path: str
    dsn: str


def new_lake(postgres: PostgresServer, root: Path) -> Lake:
    name = postgres.create_database(f"lake_{uuid.uuid4().hex[:12]}")
    data = root / "lake-data"
    data.mkdir(parents=True, exist_ok=True)
    dsn = postgres.dsn(name)
    return Lake(f"ducklake:postgres:{dsn}", f"{data}/", dsn)


@pytest.fixture()
def lake(postgres: PostgresServer, tmp_path: Path) -> Lake:
    return new_lake(postgres, tmp_path)
