"""`kimidocs profiles list|show|check|new` through typer's CliRunner, and their one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kimidocs.cli import app, main
from kimidocs.profiles import load_folder
from kimidocs.run.settings import ConfigError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "240")
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, ["profiles", *args])


def test_new_writes_a_starter_that_checks(tmp_path: Path) -> None:
    result = invoke("new", "invoices")
    assert result.exit_code == 0, result.output
    toml = tmp_path / "profiles" / "invoices" / "profile.toml"
    assert toml.is_file() and "# " in toml.read_text()
    assert load_folder(toml.parent).spec.task_names == ("overview",)
    again = invoke("new", "invoices")
    assert isinstance(again.exception, ConfigError) and "already exists" in str(again.exception)


def test_list_shows_where_version_and_shadowing(tmp_path: Path) -> None:
    assert invoke("new", "contract").exit_code == 0  # shadows the built-in
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    assert "shadows the built-in" in lines["contract"] and "profiles/contract" in lines["contract"]
    assert load_folder(tmp_path / "profiles" / "contract").version in lines["contract"]
    assert "built-in" in lines["report"] and "prompts" in lines["summary"]


def test_list_survives_a_broken_profile(tmp_path: Path) -> None:
    (tmp_path / "profiles" / "broken").mkdir(parents=True)
    (tmp_path / "profiles" / "broken" / "profile.toml").write_text("tasks = 3\n")
    result = invoke("list")
    assert result.exit_code == 0
    assert "invalid" in result.output and "declare at least one task" in result.output


def test_kimidocs_profiles_env_is_the_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("new", "elsewhere", "--dir", "team").exit_code == 0
    assert "elsewhere" not in invoke("list").output
    monkeypatch.setenv("KIMIDOCS_PROFILES", str(tmp_path / "team"))
    assert "elsewhere" in invoke("list").output


def test_show_lists_tasks_fields_and_view_columns() -> None:
    result = invoke("show", "contract")
    assert result.exit_code == 0, result.output
    out = result.output
    for task in ("parties", "term", "payments", "obligations", "risks"):
        assert f"task {task} version" in out
    assert "view profile_contract_term:" in out
    assert "effective_date DATE, effective_date_precision VARCHAR, effective_date_text VARCHAR" in out
    assert "total_value DECIMAL(38,4), total_value_currency VARCHAR" in out
    assert "view profile_contract_parties_parties:" in out and "item_no BIGINT" in out
    assert "hand-written" in invoke("show", "summary").output


def test_check_prints_the_first_tasks_request(tmp_path: Path) -> None:
    result = invoke("check", str(Path(__file__).resolve().parent.parent / "prompts" / "report"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok ")
    body = json.loads(result.output[result.output.index("{") :])
    system, document, task = body["messages"]
    assert system["role"] == "system" and "<page 1>" in document["content"]
    assert 'Task "overview"' in task["content"] and "report.overview" in task["content"]
    assert body["response_format"] == {"type": "json_object"}


def test_check_names_file_and_key_of_a_mistake(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "profile.toml").write_text('[[tasks]]\nname = "a"\ninstructions = "i"\nfields = {x = "dat"}\n')
    result = invoke("check", str(folder))
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(
        f"{folder / 'profile.toml'}: tasks.a.fields.x.type: must be one of"
    )


def test_errors_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for args in (["show", "nope"], ["new", "Bad-Name"], ["check", "missing"]):
        monkeypatch.setattr(sys, "argv", ["kimidocs", "profiles", *args])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
