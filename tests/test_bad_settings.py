"""Settings and arguments that cannot work end as one clear line and exit 2 (issue 10.8), before any run
is opened: no traceback, no `runs` row left `running`, nothing silently wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from kimidocs.run.settings import ConfigError, load_settings
from kimidocs.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
CLI = "from kimidocs.cli import main; main()"


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_"))}
    clean.setdefault("KIMIDOCS_DB", str(tmp_path / "k.duckdb"))
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=clean,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=120,
    )


def _not_duckdb(tmp_path: Path) -> str:
    path = tmp_path / "notes.duckdb"
    path.write_text("this is a text file, not a database\n" * 100)
    return str(path)


def _newer_schema(tmp_path: Path) -> str:
    path = tmp_path / "future.duckdb"
    Store(path).migrate()
    Store(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO schema_migrations VALUES (99, 'from_the_future', now())")
    return str(path)


def _bad_models_file(tmp_path: Path) -> str:
    path = tmp_path / "models.toml"
    path.write_text('[models."smollm2-135m"]\nwindow = "big"\n')
    return str(path)


CASES = {
    "unknown tier": ({"KIMIDOCS_TIER": "tier9"}, (), "unknown tier 'tier9'"),
    "non-integer max pages": ({"KIMIDOCS_MAX_PAGES": "many"}, (), "KIMIDOCS_MAX_PAGES"),
    "negative timeout": ({"KIMIDOCS_EXTRACT_TIMEOUT_S": "-5"}, (), "KIMIDOCS_EXTRACT_TIMEOUT_S"),
    "negative max bytes": ({"KIMIDOCS_MAX_FILE_BYTES": "-1"}, (), "KIMIDOCS_MAX_FILE_BYTES"),
    "negative retries": ({"KIMIDOCS_MAX_RETRIES": "-1"}, (), "KIMIDOCS_MAX_RETRIES"),
    "unknown PDF engine": ({"KIMIDOCS_PDF_ENGINE": "mupdf"}, (), "unknown PDF engine 'mupdf'"),
    "base URL without scheme": ({"KIMI_BASE_URL": "api.moonshot.ai/v1"}, (), "KIMI_BASE_URL"),
    "non-ASCII key": ({"KIMI_API_KEY": "sk-clé-0123456789"}, (), "non-ASCII"),
    "unknown model": ({}, ("--model", "kimi-k9"), "unknown model 'kimi-k9'"),
    "unknown model: how to declare": ({}, ("--model", "smollm2-135m"), "named by KIMIDOCS_MODELS_FILE"),
    "malformed models file": ({"KIMIDOCS_MODELS_FILE": _bad_models_file}, (), "window must be an integer"),
    "missing models file": (
        {"KIMIDOCS_MODELS_FILE": "{tmp}/none.toml"},
        (),
        "KIMIDOCS_MODELS_FILE: cannot read",
    ),
    "unknown profile": ({}, ("--profile", "contractz"), "unknown profile 'contractz'"),
    "db is a folder": ({"KIMIDOCS_DB": "{tmp}"}, (), "is a folder"),
    "db parent missing": ({"KIMIDOCS_DB": "{tmp}/nope/k.duckdb"}, (), "does not exist"),
    "db not DuckDB": ({"KIMIDOCS_DB": _not_duckdb}, (), "cannot be used as the kimidocs database"),
    "db on a read-only path": ({"KIMIDOCS_DB": "/proc/kimidocs.duckdb"}, (), "cannot be used"),
    "db schema newer": ({"KIMIDOCS_DB": _newer_schema}, (), "newer than this kimidocs knows"),
    "negative budget": ({}, ("--max-cost-usd", "-1"), "max-cost-usd"),
    # issue 22.2: settings that slipped through (a traceback, a stray file, a failure per document)
    "lake without a connection string": (
        {"KIMIDOCS_DB": "ducklake:postgres:"},
        (),
        "needs a libpq connection",
    ),
    "lake with no catalog": ({"KIMIDOCS_DB": "ducklake:"}, (), "catalog in PostgreSQL only"),
    "lake on SQLite": (
        {"KIMIDOCS_DB": "ducklake:sqlite:/nonexistent/dir/cat.sqlite"},
        (),
        "catalog in PostgreSQL only",
    ),
    "lake given by --db": ({}, ("--db", "ducklake:"), "catalog in PostgreSQL only"),
    "infinite extraction timeout": ({"KIMIDOCS_EXTRACT_TIMEOUT_S": "inf"}, (), "KIMIDOCS_EXTRACT_TIMEOUT_S"),
    "NaN request timeout": ({"KIMIDOCS_REQUEST_TIMEOUT_S": "nan"}, (), "KIMIDOCS_REQUEST_TIMEOUT_S"),
    "huge batch timeout": ({"KIMIDOCS_BATCH_TIMEOUT_S": "1e300"}, (), "KIMIDOCS_BATCH_TIMEOUT_S"),
    "Redis not listening": (
        {"KIMIDOCS_LIMITS_URL": "redis://127.0.0.1:1/0"},
        (),
        "KIMIDOCS_LIMITS_URL: cannot reach",
    ),
    "missing folder": ({}, ("{tmp}/no-such-folder",), "no-such-folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    env, args, expected = CASES[case]
    env = {k: (v(tmp_path) if callable(v) else v.format(tmp=tmp_path)) for k, v in env.items()}
    args = tuple(a.format(tmp=tmp_path) for a in args)
    if case != "missing folder":
        args = (str(SAMPLES), *args)
    done = _cli(tmp_path, "analyze", *args, "--quiet", **env)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out and expected in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert not any(p.name.startswith("ducklake:") for p in tmp_path.rglob("*")), "a stray DuckDB file"
    db = Path(env.get("KIMIDOCS_DB", tmp_path / "k.duckdb"))
    if db.is_file() and case != "db not DuckDB":
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)
            assert con.execute("SELECT count(*) FROM documents").fetchone() == (0,)


def test_every_numeric_setting_is_validated(monkeypatch) -> None:
    for name in (
        "KIMIDOCS_MAX_FILE_BYTES",
        "KIMIDOCS_MAX_PAGES",
        "KIMIDOCS_EXTRACT_TIMEOUT_S",
        "KIMIDOCS_REQUEST_TIMEOUT_S",
    ):
        monkeypatch.setenv(name, "0")
        with pytest.raises(ConfigError, match=name):
            load_settings(_env_file=None)
        monkeypatch.delenv(name)


def test_a_newer_schema_is_never_written(tmp_path: Path) -> None:
    path = Path(_newer_schema(tmp_path))
    before = path.read_bytes()
    with pytest.raises(Exception, match="newer than this kimidocs knows"):
        Store(path).migrate()
    Store(path).close()
    assert path.read_bytes() == before
