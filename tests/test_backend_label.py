"""Rows are labelled from what answers, not from the address (issue 11.3): our emulator identifies
itself; Moonshot's hosts and gateways whose models are all Moonshot's are `kimi`; anything else is
`openai-compatible`. One GET /models per run, which also checks the model is offered."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

from kimidocs.core.responses import ServerInfo
from kimidocs.run.backend import EMULATOR, KIMI, OPENAI_COMPATIBLE, label, open_backend
from kimidocs.run.settings import Settings


def _settings(emu, db: Path) -> Settings:
    return Settings(KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, KIMIDOCS_DB=str(db), _env_file=None)


@pytest.mark.parametrize(
    "knobs, expected",
    [
        ({}, EMULATOR),  # a loopback emulator, with a key
        ({"identify": False}, KIMI),  # a loopback tunnel in front of Moonshot: only Moonshot's models
        ({"identify": False, "owned_by": "llamacpp"}, OPENAI_COMPATIBLE),  # a local model server
    ],
)
def test_the_label_comes_from_the_server(tmp_path: Path, make_emulator, knobs: dict, expected: str) -> None:
    emu = make_emulator(**knobs)
    backend = open_backend(_settings(emu, tmp_path / "k.duckdb"))
    try:
        assert backend.name == expected and not backend.emulated_here
        assert backend.offered and "kimi-k2.5" in backend.offered
    finally:
        backend.close()
    assert len(emu.requests("/models")) == 1


def test_rows_carry_the_label_and_one_models_request_per_run(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(identify=False, owned_by="vllm")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("The fee is 2,000 EUR, due on 1 April 2026.\n" * 20)
    report = run_pipeline(folder, tmp_path / "k.duckdb", emu)
    assert report.backend == OPENAI_COMPATIBLE and report.count("ok") == 1
    labels = db_rows(
        tmp_path / "k.duckdb", "SELECT DISTINCT backend FROM calls UNION SELECT backend FROM runs"
    )
    assert labels == [(OPENAI_COMPATIBLE,)]
    assert len(emu.requests("/models")) == 1


def test_label_rules_without_a_server_answer() -> None:
    assert label("https://api.moonshot.ai/v1", None) == KIMI
    assert label("http://127.0.0.1:9/v1", None) == OPENAI_COMPATIBLE  # not assumed to be the emulator
    mixed = ServerInfo(model_ids=("a", "b"), owners=("moonshot", "other"), emulator=False)
    assert label("https://gateway.example/v1", mixed) == OPENAI_COMPATIBLE


def test_models_command_reaches_a_local_emulator_without_a_key(make_emulator) -> None:
    from typer.testing import CliRunner

    from kimidocs.cli import app

    emu = make_emulator()
    done = CliRunner().invoke(app, ["models", "--base-url", emu.base_url])
    assert done.exit_code == 0, done.output
    assert "models on the account at" in done.output and "kimi-k2.5" in done.output
    foreign = make_emulator(identify=False)  # answers like a server that is not ours
    refused = CliRunner().invoke(app, ["models", "--base-url", foreign.base_url])
    assert refused.exit_code == 1 and "not a kimidocs" in refused.output and "KIMI_API_KEY" in refused.output
