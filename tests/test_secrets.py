"""The API key never reaches logs, the database, reports, errors or the CLI's output.

Whole runs against an emulator that only accepts a distinctive key: one with retries (a 500 and a 429),
one with a wrong key (401, the run stops), and `kimidocs analyze` as a subprocess with DEBUG logging, both
keys. Everything those runs leave behind is searched for either key, and for the random part alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kimidocs.run import pipeline
from kimidocs.run.report import report_markdown
from kimidocs.run.settings import Settings
from kimidocs.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from kimidocs.cli import app; app()"
)


@pytest.fixture()
def folder(tmp_path: Path, corpus: Path) -> Path:
    out = tmp_path / "inbox"
    shutil.copytree(SAMPLES, out, ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(corpus / "bad" / "fake-doc-binary-with-docx-extension.docx", out / "broken.docx")
    return out


def _run(folder: Path, db: Path, base_url: str, key: str, **options) -> pipeline.RunReport:
    """The pipeline as `kimidocs analyze` runs it: settings -> open_backend -> client (key in a SecretStr)."""
    settings = Settings(KIMI_API_KEY=key, KIMI_BASE_URL=base_url, KIMIDOCS_DB=str(db))
    return pipeline.run_folder(pipeline.RunOptions(folder=str(folder), db=str(db), **options), settings)


def _cli(folder: Path, db: Path, base_url: str, key: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_"))}
    env.update(KIMI_BASE_URL=base_url, KIMI_API_KEY=key, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-c", CLI, "analyze", str(folder), "--db", str(db), "--quiet"],
        env=env,
        cwd=cwd,  # no .env file here
        capture_output=True,
        text=True,
        timeout=300,
    )


def _exported(db: Path, out: Path) -> str:
    """Every table and view of the database, as CSV text."""
    store = Store(db, read_only=True)
    try:
        files = store.export(out, "csv")
    finally:
        store.close()
    assert {"calls.csv", "runs.csv", "failures.csv", "summaries.csv", "documents.csv"} <= {
        f.name for f in files
    }
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_the_key_is_nowhere(tmp_path: Path, folder: Path, make_emulator, caplog) -> None:
    key = "sk-test-" + secrets.token_hex(20)
    wrong = "sk-wrong-" + secrets.token_hex(20)
    emu = make_emulator(api_key=key)
    caplog.set_level(logging.DEBUG)
    texts: dict[str, str] = {}

    # 1. a run with retries: one 500, then one 429 (with Retry-After)
    emu.fail_next("500")
    emu.fail_next("429")
    db = tmp_path / "k.duckdb"
    ok = _run(folder, db, emu.base_url, key)
    statuses = [e["status"] for e in emu.requests("/chat/completions")]
    assert 500 in statuses and 429 in statuses  # retries really happened
    assert ok.count("ok") == 5 and ok.count("failed") == 1
    texts["report 1"] = report_markdown(ok) + repr(ok)

    # 2. a run with the wrong key: 401, the run stops, the error is recorded
    bad = _run(folder, db, emu.base_url, wrong, force=True)
    assert bad.status == "stopped" and any(o.error_type for o in bad.outcomes)
    assert 401 in [e["status"] for e in emu.requests("/chat/completions")]
    texts["report 2"] = report_markdown(bad) + repr(bad)

    # 3. the CLI in its own process with DEBUG logging: the right key (a retry on the way), then the wrong one
    emu.fail_next("503")
    cli_db = tmp_path / "cli.duckdb"
    good_cli = _cli(folder, cli_db, emu.base_url, key, tmp_path)
    assert "attempt 1 failed" in good_cli.stderr  # the DEBUG/WARNING log lines are in this output
    texts["cli 1"] = good_cli.stdout + good_cli.stderr
    bad_cli = _cli(folder, tmp_path / "cli-wrong.duckdb", emu.base_url, wrong, tmp_path)
    assert bad_cli.returncode != 0
    texts["cli 2"] = bad_cli.stdout + bad_cli.stderr

    texts["logs"] = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert f"{emu.base_url}/chat/completions" in texts["logs"]  # httpx's request lines were captured
    texts["db export"] = _exported(db, tmp_path / "export")
    texts["cli db export"] = _exported(cli_db, tmp_path / "export-cli")
    for path in (db, cli_db):
        texts[f"{path.name} bytes"] = path.read_bytes().decode("latin-1")
    assert "Invalid Authentication" in texts["db export"]  # the auth failure itself is stored

    for name, text in texts.items():
        for secret in (key, wrong, key.removeprefix("sk-test-"), wrong.removeprefix("sk-wrong-")):
            assert secret not in text, f"a key leaked into {name}"
