"""DuckDB extensions shipped as Python wheels, LOADed from their installed files.

DuckDB's own extension download cannot reach its server here (nor on many locked-down machines),
so each extension we use is pinned as a `duckdb-extension-<name>` wheel whose package holds
`extensions/v<duckdb version>/<name>.duckdb_extension`. One helper finds and loads any of them.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import duckdb

#: Extension name -> the Python package of the wheel that ships it.
WHEELS = {
    "fts": "duckdb_extension_fts",
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}


@cache
def extension_path(name: str) -> Path:
    """The `<name>.duckdb_extension` file of the wheel that ships it, for this DuckDB version."""
    package = WHEELS[name]
    wheel = package.replace("_", "-")
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise FileNotFoundError(f"the {name} extension is not installed (pip install {wheel})") from exc
    root = Path(module.__file__ or "").parent
    filename = f"{name}.duckdb_extension"
    found = sorted(root.rglob(f"v{duckdb.__version__}/{filename}")) or sorted(root.rglob(filename))
    if not found:
        raise FileNotFoundError(f"no {filename} under {root} (pip install {wheel})")
    return found[0]


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD a wheel-shipped extension into `con` (a no-op when it is already loaded)."""
    con.execute(f"LOAD '{extension_path(name).as_posix()}'")
