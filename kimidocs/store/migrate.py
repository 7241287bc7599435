"""Numbered migrations: `migrations/NNNN_name.sql`, applied in order, each in its own transaction.

Applied versions are recorded in `schema_migrations(version, name, applied_at)`, so opening an
old database with new code upgrades it in place and a migration never runs twice. Migrations
only ever add: a released file is never edited (write a new one instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import duckdb

from kimidocs.core.models import MODELS
from kimidocs.store.errors import MigrationError, SchemaTooNew

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)
"""


Translate = Callable[[str], str]  # a migration's SQL as this engine runs it (lake_sql.translate)


def _as_is(sql: str) -> str:
    return sql


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this code, in version order."""
    folder = resources.files("kimidocs.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if m := _NAME.match(entry.name):
            found.append(Migration(int(m[1]), m[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {folder}: {versions}")
    return found


def applied_versions(con: duckdb.DuckDBPyConnection, translate: Translate = _as_is) -> set[int]:
    con.execute(translate(BOOTSTRAP))
    return {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}


def apply(
    con: duckdb.DuckDBPyConnection, path: Path, *, upto: int | None = None, translate: Translate = _as_is
) -> list[int]:
    """Apply the missing migrations (up to `upto`, for tests building old databases); `translate`
    adapts each one to the engine (DuckLake: no keys), so the files stay the one source of truth."""
    done = applied_versions(con, translate)
    shipped = available()
    known = max((mig.version for mig in shipped), default=0)
    if done and max(done) > known:
        raise SchemaTooNew(path, max(done), known)
    applied = []
    for mig in shipped:
        if mig.version in done or (upto is not None and mig.version > upto):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(translate(mig.sql))
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [mig.version, mig.name, _utcnow()])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise MigrationError(path, mig.version, mig.name, str(exc)) from exc
        applied.append(mig.version)
    if "model_prices" in _tables(con):
        refresh_prices(con)
    return applied


def refresh_prices(con: duckdb.DuckDBPyConnection) -> bool:
    """Refill `model_prices` from kimidocs.core.models (the one price table in the code).

    Rewrites only when the code's table differs, so an unchanged database stays unchanged.
    """
    wanted = sorted(
        (m.id, m.window, m.price_cache_hit, m.price_cache_miss, m.price_output, m.test_only)
        for m in MODELS.values()
    )
    current = con.execute(
        'SELECT model, "window", price_cache_hit, price_cache_miss, price_output, test_only '
        "FROM model_prices ORDER BY model"
    ).fetchall()
    if current == wanted:
        return False
    now = _utcnow()
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM model_prices")
    con.executemany("INSERT INTO model_prices VALUES (?, ?, ?, ?, ?, ?, ?)", [[*row, now] for row in wanted])
    con.execute("COMMIT")
    return True


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE schema_name = 'main' AND database_name = current_database()"
    ).fetchall()
    return {r[0] for r in rows}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
