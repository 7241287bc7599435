"""Every error the store raises, so callers can tell "try later" from "fix something".

StoreError
 ├── DatabaseLocked      another process holds the DuckDB file past our wait
 ├── DatabaseMissing     a read-only open of a file that does not exist yet
 ├── DatabaseUnusable    the path cannot hold a DuckDB database (not DuckDB, read-only, a folder...)
 ├── SchemaTooNew        the database was written by a newer kimidocs: never write it with older code
 ├── MigrationError      a numbered migration failed; the database is left at the last good version
 ├── SearchIndexUnusable  the local full-text index file cannot be built (its folder not writable...)
 └── QueryError          an analyst's SQL failed (message from DuckDB, file named)
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base class of the store's errors."""


class DatabaseLocked(StoreError):
    """DuckDB lets one process hold a database file; another one held it for longer than we waited."""

    def __init__(self, path: Path | str, waited_s: float, detail: str) -> None:
        self.path = path
        self.waited_s = waited_s
        self.detail = detail
        super().__init__(
            f"{path}: another process holds this DuckDB file (waited {waited_s:.1f} s). "
            "A kimidocs run only holds it for short write transactions, so this usually means a "
            "long query, an open DuckDB shell or a stuck process; close it or retry later. "
            f"DuckDB said: {detail}"
        )


class DatabaseMissing(StoreError):
    def __init__(self, path: Path | str) -> None:
        self.path = path
        super().__init__(f"{path}: no database here yet; run `kimidocs analyze` first or pass --db")


class DatabaseUnusable(StoreError):
    """The file exists but is not a DuckDB database, or cannot be opened for writing."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: cannot be used as the kimidocs database: {detail}")


class SchemaTooNew(StoreError):
    """The database has migrations this code does not know: a newer kimidocs wrote it."""

    def __init__(self, path: Path | str, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"{path}: schema version {found} is newer than this kimidocs knows ({known}); "
            "upgrade kimidocs, or use another database (--db)"
        )


class MigrationError(StoreError):
    def __init__(self, path: Path | str, version: int, name: str, detail: str) -> None:
        self.path = path
        self.version = version
        super().__init__(f"{path}: migration {version:04d} ({name}) failed and was rolled back: {detail}")


class SearchIndexUnusable(StoreError):
    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = path
        super().__init__(f"{path}: cannot build the full-text index there ({detail})")


class QueryError(StoreError):
    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = path
        super().__init__(f"{path}: {detail}")
