"""DuckDB store: numbered migrations, idempotent writes, analysts' views, full-text search.

The only package that imports duckdb. Schema reference: docs/SCHEMA.md.
"""

from kimidocs.store.errors import (
    DatabaseLocked,
    DatabaseMissing,
    MigrationError,
    QueryError,
    SearchIndexMissing,
    StoreError,
)
from kimidocs.store.rows import QueryResult, SearchHit, SummaryRow
from kimidocs.store.runlock import RunLock
from kimidocs.store.store import Store

__all__ = [
    "DatabaseLocked",
    "DatabaseMissing",
    "MigrationError",
    "QueryError",
    "QueryResult",
    "RunLock",
    "SearchHit",
    "SearchIndexMissing",
    "Store",
    "StoreError",
    "SummaryRow",
]
