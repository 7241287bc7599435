"""Issue 24.1: a line-up that moves without breaking runs. The client's default (kimi-k2.5) gives way to
the first successor the account offers, said in one line and recorded as the run's model; a model the
user chose is never replaced (one line, exit 2, naming the offered models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import db_rows, run_pipeline

from kimidocs.core.models import DEFAULT_MODEL, MODELS, successors
from kimidocs.run.report import report_markdown

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
CLI = "from kimidocs.cli import main; main()"
OFFERED = ["kimi-k2.6", "kimi-k3"]


def _cli(tmp_path: Path, emu, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_"))}
    clean.update({"KIMI_API_KEY": emu.api_key, "KIMI_BASE_URL": emu.base_url, "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=clean,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_table_knows_each_models_successor() -> None:
    assert successors(DEFAULT_MODEL) == ["kimi-k2.6", "kimi-k3"]
    assert MODELS["kimi-k2.6"].retires == "2027-01-07" and successors("kimi-k3") == []


def test_without_a_chosen_model_the_run_moves_to_the_offered_successor(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(models=OFFERED)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(SAMPLES, db, emu)
    assert report.model == "kimi-k2.6" and report.count("failed") == 0, report.outcomes
    assert report.model_note and "kimi-k2.5 is not offered" in report.model_note
    assert "using its successor kimi-k2.6" in report_markdown(report)
    assert db_rows(db, "SELECT DISTINCT model FROM runs") == [("kimi-k2.6",)]
    assert {m for (m,) in db_rows(db, "SELECT DISTINCT model FROM calls")} == {"kimi-k2.6"}
    assert {e["model"] for e in emu.requests("/chat/completions")} == {"kimi-k2.6"}


def test_the_cli_says_which_model_it_used_and_refuses_to_replace_a_chosen_one(
    tmp_path: Path, make_emulator
) -> None:
    emu = make_emulator(models=OFFERED)
    db = tmp_path / "k.duckdb"
    moved = _cli(tmp_path, emu, "analyze", str(SAMPLES), "--db", str(db), "--quiet")
    assert moved.returncode == 0, moved.stderr
    assert "using its successor kimi-k2.6" in moved.stdout + moved.stderr
    chosen = _cli(tmp_path, emu, "analyze", str(SAMPLES), "--db", str(db), "--force", KIMI_MODEL="kimi-k2.5")
    out = chosen.stdout + chosen.stderr
    assert chosen.returncode == 2 and "Traceback" not in out, out
    assert "'kimi-k2.5' is not offered" in out and "kimi-k2.6, kimi-k3" in out


def test_kimidocs_models_shows_retirement_dates_and_successors(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(models=OFFERED)
    shown = _cli(tmp_path, emu, "models", COLUMNS="250")
    assert shown.returncode == 0, shown.stderr
    line = {ln.split()[1]: ln for ln in shown.stdout.splitlines() if ln.startswith("│")}
    assert "retired 2026-08-31 -> kimi-k2.6" in line["kimi-k2.5"]
    assert "retires 2027-01-07 -> kimi-k3" in line["kimi-k2.6"] and "0.16/0.95/4.00" in line["kimi-k2.6"]


def test_k3_takes_reasoning_effort_instead_of_the_thinking_switch(tmp_path: Path, make_emulator) -> None:
    """Issue 24.2: kimi-k3's thinking depth is `reasoning_effort`; sending it with `thinking` is a 400."""
    from kimidocs.core.models import get_model
    from kimidocs.kimi.policy import apply_policy

    k3 = apply_policy({"messages": [], "thinking": {"type": "disabled"}}, get_model("kimi-k3"))
    assert k3["reasoning_effort"] == "low" and "thinking" not in k3
    k26 = apply_policy({"messages": [], "reasoning_effort": "low"}, get_model("kimi-k2.6"))
    assert k26["thinking"] == {"type": "disabled"} and "reasoning_effort" not in k26
    emu = make_emulator()
    report = run_pipeline(SAMPLES, tmp_path / "k.duckdb", emu, model="kimi-k3")
    assert report.count("failed") == 0, report.outcomes
    sent = emu.requests("/chat/completions")
    assert {(e["reasoning_effort"], e["thinking_sent"], e["thinking"]) for e in sent} == {
        ("low", False, False)
    }


def test_one_prompt_cache_key_per_document_prefix(tmp_path: Path, make_emulator) -> None:
    """Issue 24.3: for models that take it, every call over one document's prefix (its tasks here) sends
    the same `prompt_cache_key`; another document another one; a model without it never gets one."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"lease-{i}.txt").write_text(
            f"Lease {i}: Alpha lets to Beta for 1,{i}00 EUR a month.\n" * 40
        )
    emu = make_emulator()
    run_pipeline(folder, tmp_path / "k.duckdb", emu, model="kimi-k2.6", profile="contract")
    keys = [e["prompt_cache_key"] for e in emu.requests("/chat/completions")]
    assert (
        len(keys) == 10 and all(keys) and len(set(keys)) == 2 and sorted(map(keys.count, set(keys))) == [5, 5]
    )
    emu.reset()
    run_pipeline(folder, tmp_path / "k25.duckdb", emu, model="kimi-k2.5", profile="contract")
    assert {e["prompt_cache_key"] for e in emu.requests("/chat/completions")} == {None}
