"""`kimidocs runs`: recent runs and one run's failures and costliest documents, read from DuckDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_pipeline
from typer.testing import CliRunner

from kimidocs.cli import app

REPO = Path(__file__).resolve().parent.parent


def test_runs_lists_runs_and_details_one(tmp_path: Path, corpus: Path, kimi_emulator) -> None:
    folder = tmp_path / "in"
    shutil.copytree(REPO / "data" / "samples", folder, ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(corpus / "bad" / "empty.pdf", folder / "empty.pdf")
    db = tmp_path / "k.duckdb"
    first = run_pipeline(folder, db, kimi_emulator)
    second = run_pipeline(folder, db, kimi_emulator)  # everything unchanged: no calls, no cost
    runner = CliRunner()

    listed = runner.invoke(app, ["runs", "--db", str(db), "-f", "json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["run"] for r in rows] == [second.run_id[:12], first.run_id[:12]]  # newest first
    newest, oldest = rows
    assert (oldest["status"], oldest["failed"], oldest["ok"]) == ("completed", 1, first.count("ok"))
    assert oldest["calls"] == first.count("ok") and oldest["cost_usd"] > 0
    assert newest["calls"] == 0 and newest["cost_usd"] == 0

    detail = runner.invoke(app, ["runs", first.run_id[:8], "--db", str(db), "-f", "json"])
    assert detail.exit_code == 0, detail.output
    run, failures, costliest = (json.loads(part) for part in _json_documents(detail.output))
    assert run[0]["run_id"] == first.run_id and run[0]["cost_usd"] > 0
    assert [(Path(f["path"]).name, f["error_type"]) for f in failures] == [("empty.pdf", "EmptyDocument")]
    costs = [d["cost_usd"] for d in costliest]
    assert costs == sorted(costs, reverse=True) and len(costs) == first.count("ok")
    assert abs(sum(costs) - run[0]["cost_usd"]) < 1e-5
    assert all(d["title"] for d in costliest)

    missing = runner.invoke(app, ["runs", "ffffffff", "--db", str(db)])
    assert missing.exit_code == 1 and "no run with an id starting 'ffffffff'" in missing.output


def _json_documents(text: str) -> list[str]:
    """The JSON arrays printed one after another."""
    decoder = json.JSONDecoder()
    out, pos = [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        value, end = decoder.raw_decode(text, pos)
        out.append(json.dumps(value))
        pos = end
    return out
