"""The store (a DuckDB file or a DuckLake): numbered migrations, idempotent writes, views, search.

The only package that imports duckdb. Schema reference: docs/SCHEMA.md.
"""

from kimidocs.store.connection import fts_extension_path
from kimidocs.store.errors import (
    DatabaseLocked,
    DatabaseMissing,
    DatabaseUnusable,
    MigrationError,
    QueryError,
    SchemaTooNew,
    SearchIndexUnusable,
    StoreError,
)
from kimidocs.store.extensions import extension_path
from kimidocs.store.location import is_lake, shown_db
from kimidocs.store.rows import QueryResult, QuestionRow, SearchHit, SummaryRow, TaskResultRow
from kimidocs.store.runlock import RunLock
from kimidocs.store.store import Store

__all__ = [
    "DatabaseLocked",
    "DatabaseMissing",
    "DatabaseUnusable",
    "MigrationError",
    "QueryError",
    "QueryResult",
    "QuestionRow",
    "RunLock",
    "SchemaTooNew",
    "SearchHit",
    "SearchIndexUnusable",
    "Store",
    "StoreError",
    "SummaryRow",
    "TaskResultRow",
    "extension_path",
    "fts_extension_path",
    "is_lake",
    "shown_db",
]
