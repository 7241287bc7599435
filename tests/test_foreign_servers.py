"""The client against servers that are not our default emulator (issue 10.10): usage in every documented
place or none at all, 2xx error bodies on a stream, Retry-After missing, tool calls split over deltas,
a model the account does not offer, a 401 that names the regions. The emulator is as strict as the
documented API on tools. Real HTTP to the emulator; MockTransport only for a body no server here sends."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import db_rows, run_pipeline

from kimidocs.core.models import get_model
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import AuthenticationError, EngineOverloaded, InvalidRequest, error_from_response
from kimidocs.kimi.keys import CHINA_BASE_URL, INTERNATIONAL_BASE_URL
from kimidocs.kimi.policy import apply_policy
from kimidocs.kimi.retry import RetryPolicy
from kimidocs.run.settings import ConfigError

TOOL = {
    "type": "function",
    "function": {
        "name": "record_fact",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "page": {"type": "integer", "minimum": 1}},
            "required": ["title", "page"],
        },
    },
}


def _body(**extra) -> dict:
    raw = {
        "model": "kimi-k2.5",
        "messages": [
            {"role": "system", "content": "You summarise documents as JSON. " * 120},
            {"role": "user", "content": '<page number="1">\nThe rent is 1,200 EUR a month.\n</page>'},
            {"role": "user", "content": "Summarise the document."},
        ],
        "max_tokens": 300,
        "response_format": {"type": "json_object"},
    }
    raw.update(extra)
    return apply_policy(raw, get_model("kimi-k2.5"))


def _client(handle, **kw) -> KimiClient:
    policy = kw.pop("retry_policy", None) or RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.02)
    return KimiClient(handle.base_url, handle.api_key, retry_policy=policy, **kw)


@pytest.mark.parametrize("shape", ["both", "moonshot", "openai"])
def test_streamed_usage_is_read_from_every_documented_place(make_emulator, shape: str) -> None:
    emu = make_emulator(usage_shape=shape)
    with _client(emu) as client:
        plain = client.chat(_body(), stream=False)
        client.chat(_body(), stream=False)  # warms the cache so cached_tokens > 0 below
        streamed = client.chat(_body(), stream=True)
    assert plain.usage_reported and streamed.usage_reported
    assert streamed.usage.prompt_tokens == plain.usage.prompt_tokens > 0
    assert streamed.usage.cached_tokens > 0
    sent = emu.requests("/chat/completions")[-1]
    assert sent["stream"] is True


def test_the_stream_asks_for_usage_the_openai_way(make_emulator) -> None:
    emu = make_emulator(usage_shape="openai")  # usage only when include_usage is asked
    with _client(emu) as client:
        result = client.chat(_body(), stream=True)
    assert result.usage_reported and result.usage.completion_tokens > 0


def test_no_usage_is_stored_as_an_estimate_never_as_zero(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(usage_shape="none")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "lease.txt").write_text("The lease starts on 1 March 2026 and costs 1,200 EUR a month.\n" * 30)
    report = run_pipeline(folder, tmp_path / "k.duckdb", emu)
    assert report.count("ok") == 1
    rows = db_rows(
        tmp_path / "k.duckdb", "SELECT usage_source, prompt_tokens, completion_tokens, cost_usd FROM calls"
    )
    assert len(rows) == 1
    source, prompt, completion, cost = rows[0]
    assert source == "estimated" and prompt > 0 and completion > 0 and cost > 0
    assert report.cost_usd == pytest.approx(cost)


def test_a_2xx_error_body_on_a_stream_raises_like_the_plain_path() -> None:
    def overloaded(request: httpx.Request) -> httpx.Response:
        body = {"error": {"type": "engine_overloaded_error", "message": "The engine is currently overloaded"}}
        return httpx.Response(200, json=body)

    slept: list[float] = []
    client = KimiClient(
        "https://api.example.test/v1",
        "sk-test-1234567",
        transport=httpx.MockTransport(overloaded),
        retry_policy=RetryPolicy(max_retries=1, sleep=slept.append),
    )
    with client:
        for stream in (False, True):
            with pytest.raises(EngineOverloaded):
                client.chat(_body(), stream=stream)
    assert len(slept) == 2  # retried once per path, as an overloaded engine should be


def test_a_429_without_retry_after_waits_as_the_message_says(make_emulator) -> None:
    emu = make_emulator(retry_after_header=False)
    emu.fail_next("429")
    slept: list[float] = []
    policy = RetryPolicy(max_retries=2, retry_after_jitter=0.0, sleep=slept.append)
    with _client(emu, retry_policy=policy) as client:
        result = client.chat(_body())
    first = emu.requests("/chat/completions")[0]
    assert first["status"] == 429 and result.attempts == 2
    assert slept == [pytest.approx(1.0)]  # "please try again after 1 seconds", no header


def test_a_tool_call_split_over_deltas_is_reassembled(make_emulator) -> None:
    emu = make_emulator(tool_call_deltas="split")
    body = _body(tools=[TOOL])
    del body["response_format"]
    with _client(emu) as client:
        whole = client.chat(body, stream=False)
        split = client.chat(body, stream=True)
    assert len(split.tool_calls) == 1
    assert split.tool_calls[0]["function"]["name"] == "record_fact"
    assert json.loads(split.tool_calls[0]["function"]["arguments"]) == json.loads(
        whole.tool_calls[0]["function"]["arguments"]
    )


@pytest.mark.parametrize(
    "tool, problem",
    [
        ({**TOOL, "function": {**TOOL["function"], "name": "bad name!"}}, "function.name"),
        (
            {
                **TOOL,
                "function": {
                    **TOOL["function"],
                    "parameters": {"type": "object", "properties": {"title": {"description": "no type"}}},
                },
            },
            "property without type",
        ),
    ],
)
def test_the_emulator_refuses_tools_kimi_refuses(kimi_emulator, tool: dict, problem: str) -> None:
    body = _body(tools=[tool])
    with _client(kimi_emulator) as client, pytest.raises(InvalidRequest, match=problem):
        client.chat(body)


def test_a_model_the_account_does_not_offer_stops_the_run_once(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator(models=["kimi-k2.6", "kimi-k3"])
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.txt").write_text(f"Document {i}: the fee is {i},000 EUR.\n" * 20)
    with pytest.raises(ConfigError, match=r"kimi-k2\.5.*kimi-k2\.6, kimi-k3"):
        run_pipeline(folder, tmp_path / "k.duckdb", emu, model="kimi-k2.5")
    assert emu.requests("/chat/completions") == []
    assert len(emu.requests("/models")) == 1


def test_a_401_names_both_regions() -> None:
    body = b'{"error": {"type": "invalid_authentication_error", "message": "Invalid Authentication"}}'
    text = str(error_from_response(401, body, {}))
    assert isinstance(error_from_response(401, body, {}), AuthenticationError)
    assert INTERNATIONAL_BASE_URL in text and CHINA_BASE_URL in text and "KIMI_BASE_URL" in text
