"""Defect: a key with a trailing newline leaked (issue 10.1). The key is cleaned once at settings time,
refused in one line when it cannot be a header, redacted in every form, and a request httpx refuses to
build is never retried."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import REDACTED, RequestNotSendable, redact
from kimidocs.kimi.keys import clean_api_key, key_forms
from kimidocs.kimi.retry import RetryPolicy
from kimidocs.run.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent
CLI = "from kimidocs.cli import main; main()"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_"))}
    env.update(extra)
    return env


def test_settings_strip_a_trailing_newline(monkeypatch) -> None:
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("KIMI_API_KEY", f"  {key}\r\n")
    assert load_settings(_env_file=None).api_key_value() == key


@pytest.mark.parametrize("bad", ["sk-ab\ncd1234", "sk-abcd\x1bef", "sk-clé-123456", "sk-ab cd1234"])
def test_settings_refuse_a_key_no_header_can_carry_without_showing_it(monkeypatch, bad: str) -> None:
    monkeypatch.setenv("KIMI_API_KEY", bad)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "KIMI_API_KEY" in message and "key not shown" in message
    for part in (bad, bad[3:7], bad.strip()):
        assert part not in message


def test_redact_covers_every_form_of_the_key() -> None:
    key = "sk-" + secrets.token_hex(16)
    raw = key + "\n"
    texts = [
        f"LocalProtocolError: Illegal header value b'Bearer {key}\\n'",
        f"Authorization: Bearer {key}",
        f'{{"key": "{key}\\n"}}',
        f"echo {raw} and {key!r}",
    ]
    for text in texts:
        cleaned = redact(text, raw)
        assert key not in cleaned and REDACTED in cleaned, text
    assert all(len(form) >= 6 for form in key_forms("abc"))  # tiny keys never blank a message


def test_the_client_cleans_the_key_and_sends_it_as_a_valid_header(kimi_emulator) -> None:
    with KimiClient(kimi_emulator.base_url, kimi_emulator.api_key + "\n") as client:
        models = client.list_models()
    assert models and kimi_emulator.requests("/models")[-1]["status"] == 200


def test_a_request_httpx_cannot_build_is_not_retried() -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.LocalProtocolError("Illegal header value b'Bearer sk-secret-value-123\\n'")

    slept: list[float] = []
    policy = RetryPolicy(max_retries=6, sleep=slept.append)
    client = KimiClient(
        "https://api.example.test/v1",
        "sk-secret-value-123",
        transport=httpx.MockTransport(refuse),
        retry_policy=policy,
    )
    with client, pytest.raises(RequestNotSendable) as info:
        client.chat({"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]})
    assert len(attempts) == 1 and slept == [] and info.value.fatal_for_run
    assert "sk-secret-value-123" not in str(info.value)


def test_cli_run_with_a_newline_key_works_and_never_shows_it(tmp_path: Path, make_emulator) -> None:
    key = "sk-test-" + secrets.token_hex(20)
    emu = make_emulator(api_key=key)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("The lease starts on 1 March 2026 and costs 1,200 EUR a month.\n" * 20)
    (tmp_path / ".env").write_text(f"KIMI_API_KEY={key}\n\n")  # as an editor leaves it
    done = subprocess.run(
        [sys.executable, "-c", CLI, "analyze", str(folder), "--db", str(tmp_path / "k.duckdb"), "--quiet"],
        env=_env(KIMI_BASE_URL=emu.base_url, KIMI_API_KEY=key + "\n"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert [e["status"] for e in emu.requests("/chat/completions")] == [200]
    assert key not in done.stdout + done.stderr


def test_cli_refuses_a_key_with_an_inner_control_character(tmp_path: Path) -> None:
    key = "sk-test-" + secrets.token_hex(8) + "\x07" + secrets.token_hex(8)
    done = subprocess.run(
        [sys.executable, "-c", CLI, "analyze", str(REPO / "data" / "samples"), "--quiet"],
        env=_env(KIMI_API_KEY=key, KIMIDOCS_DB=str(tmp_path / "x.duckdb")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out and "control character" in out
    assert key[8:20] not in out and not (tmp_path / "x.duckdb").exists()


def test_clean_api_key_keeps_a_good_key_and_drops_an_empty_one() -> None:
    assert clean_api_key("sk-abc123") == "sk-abc123"
    assert clean_api_key(" \n ") is None and clean_api_key(None) is None


def test_a_developers_env_file_and_variables_never_reach_a_test(tmp_path: Path, monkeypatch) -> None:
    """The autouse fixture in conftest: this test runs in a folder with a `.env` holding a key."""
    (tmp_path / ".env").write_text("KIMI_API_KEY=sk-developer-0123456789\nKIMIDOCS_TIER=tier0\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.api_key_value() is None and settings.tier == "tier1"
