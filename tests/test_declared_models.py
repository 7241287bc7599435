"""Models from configuration (issue 17.1): a model id that is not in the table, declared in the TOML file
KIMIDOCS_MODELS_FILE, runs against any OpenAI-compatible server with plain OpenAI requests; a malformed
file is one line at start-up; an undeclared unknown model says how to declare it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import db_rows

from kimidocs.core.models import UnknownModel, get_model
from kimidocs.kimi.policy import apply_policy
from kimidocs.run import pipeline
from kimidocs.run.backend import OPENAI_COMPATIBLE
from kimidocs.run.settings import ConfigError, Settings, load_settings

SMOL = """
[models."smollm2-135m"]
window = 8192
max_output = 1024
price_input = 0
price_output = 0
json_mode = true
images = false
"""


def _file(tmp_path: Path, text: str = SMOL) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_a_declared_model_is_found_with_its_facts(tmp_path: Path) -> None:
    settings = Settings(KIMIDOCS_MODELS_FILE=str(_file(tmp_path)), _env_file=None)
    info = settings.model("smollm2-135m")
    assert (info.window, info.max_output, info.kimi, info.json_mode, info.images) == (
        8192,
        1024,
        False,
        True,
        False,
    )
    assert not info.supports_batch and info.price_cache_miss == info.price_output == 0
    assert settings.model("kimi-k2.5").kimi  # the table still answers first


@pytest.mark.parametrize(
    "text, says",
    [
        ('[models."m"]\nwindow = "big"\n', "window must be an integer"),
        ('[models."m"]\nmax_output = 10\n', "window is required"),
        ('[models."m"]\nwindow = 8192\nmax_output = 9000\n', "must be below window"),
        ('[models."m"]\nwindow = 8192\njson_mode = "yes"\n', "json_mode must be true or false"),
        ('[models."m"]\nwindow = 8192\ncontext = 3\n', "unknown key 'context'"),
        ('[models."kimi-k2.5"]\nwindow = 8192\n', "cannot be redeclared"),
        ("[models\nwindow = 1", "not valid TOML"),
        ("title = 'no models'\n", "declares no"),
    ],
)
def test_a_malformed_models_file_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(KIMIDOCS_MODELS_FILE=str(_file(tmp_path, text)), _env_file=None)
    message = str(err.value)
    assert "KIMIDOCS_MODELS_FILE" in message and says in message and "\n" not in message


def test_a_missing_models_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KIMIDOCS_MODELS_FILE: cannot read"):
        load_settings(KIMIDOCS_MODELS_FILE=str(tmp_path / "absent.toml"), _env_file=None)


def test_an_unknown_model_says_how_to_declare_it() -> None:
    with pytest.raises(UnknownModel) as err:
        get_model("smollm2-135m")
    message = str(err.value)
    assert "KIMIDOCS_MODELS_FILE" in message and '[models."smollm2-135m"]' in message and "\n" not in message


def test_declared_models_get_plain_openai_requests(tmp_path: Path) -> None:
    body = {"messages": [], "temperature": 0.2, "response_format": {"type": "json_object"}}
    smol = load_settings(KIMIDOCS_MODELS_FILE=str(_file(tmp_path)), _env_file=None).model("smollm2-135m")
    plain = apply_policy(body, smol)
    assert "thinking" not in plain and plain["temperature"] == 0.2
    assert plain["response_format"] == {"type": "json_object"} and plain["max_tokens"] == 1024
    no_json = _file(tmp_path, SMOL.replace("json_mode = true", "json_mode = false"))
    bare = apply_policy(
        body, load_settings(KIMIDOCS_MODELS_FILE=str(no_json), _env_file=None).model("smollm2-135m")
    )
    assert "response_format" not in bare
    kimi = apply_policy(body, get_model("kimi-k2.5"))
    assert kimi["thinking"] == {"type": "disabled"} and "temperature" not in kimi


def test_an_undeclared_model_fails_the_run_in_one_line(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(identify=False, owned_by="llamacpp", extra_models={"smollm2-135m": 8192})
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("The fee is 2,000 EUR.\n")
    settings = Settings(KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, _env_file=None)
    options = pipeline.RunOptions(folder=str(folder), db=str(tmp_path / "k.duckdb"), model="smollm2-135m")
    with pytest.raises(ConfigError, match="KIMIDOCS_MODELS_FILE"):
        pipeline.run_folder(options, settings)
    assert not emu.requests("/chat/completions")


@pytest.mark.parametrize("json_mode", [True, False])
def test_a_declared_model_on_a_foreign_server(tmp_path: Path, make_emulator, json_mode: bool) -> None:
    emu = make_emulator(identify=False, owned_by="llamacpp", extra_models={"smollm2-135m": 8192})
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("The fee is 2,000 EUR, due on 1 April 2026.\n" * 20)
    db = tmp_path / "k.duckdb"
    settings = Settings(
        KIMI_API_KEY=emu.api_key,
        KIMI_BASE_URL=emu.base_url,
        KIMIDOCS_DB=str(db),
        KIMIDOCS_MODELS_FILE=str(_file(tmp_path, SMOL.replace("true", "true" if json_mode else "false"))),
        _env_file=None,
    )
    options = pipeline.RunOptions(folder=str(folder), db=str(db), model="smollm2-135m")
    report = pipeline.run_folder(options, settings)
    assert report.backend == OPENAI_COMPATIBLE and report.count("ok") == 1
    sent = emu.requests("/chat/completions")
    assert sent and all(not e["thinking_sent"] and e["model"] == "smollm2-135m" for e in sent)
    expected_format = "json_object" if json_mode else None
    assert all(e["response_format"] == expected_format and e["status"] == 200 for e in sent)
    labels = db_rows(db, "SELECT DISTINCT backend FROM calls UNION SELECT backend FROM runs")
    assert labels == [(OPENAI_COMPATIBLE,)]
    assert db_rows(db, "SELECT count(*) FROM summaries")[0][0] == 1


def test_kimidocs_models_lists_declared_models(tmp_path: Path) -> None:
    from kimidocs.commands.models import build_rows

    declared = load_settings(KIMIDOCS_MODELS_FILE=str(_file(tmp_path)), _env_file=None).declared_models()
    rows = {row.id: row for row in build_rows([{"id": "smollm2-135m"}], declared=declared)}
    smol = rows["smollm2-135m"]
    assert smol.on_account and smol.info is not None and smol.info.window == 8192


def test_a_kimi_model_on_the_same_server_keeps_the_thinking_switch(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(identify=False, owned_by="llamacpp", extra_models={"smollm2-135m": 8192})
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("The fee is 2,000 EUR, due on 1 April 2026.\n" * 20)
    db = tmp_path / "k.duckdb"
    settings = Settings(
        KIMI_API_KEY=emu.api_key, KIMI_BASE_URL=emu.base_url, KIMIDOCS_DB=str(db), _env_file=None
    )
    report = pipeline.run_folder(pipeline.RunOptions(folder=str(folder), db=str(db)), settings)
    assert report.count("ok") == 1
    assert all(e["thinking_sent"] for e in emu.requests("/chat/completions"))
