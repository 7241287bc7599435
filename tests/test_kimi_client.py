"""KimiClient end to end over real sockets: JSON and SSE answers, retries, timeouts, dropped connections.

A tiny scripted HTTP server (stdlib `http.server` on 127.0.0.1:0) plays canned answers in order, so the
client's real httpx stack (pooling, SSE decoding, protocol errors) runs. Backoff sleeps are recorded, not
slept. Pure parsing (usage shapes, stream chunks, request policy) is tested without a server.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kimidocs.core.models import get_model
from kimidocs.core.records import Usage
from kimidocs.core.responses import StreamAccumulator, parse_completion, parse_usage
from kimidocs.kimi.client import KimiClient, rough_prompt_tokens
from kimidocs.kimi.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    ModelNotFound,
    QuotaExceeded,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TransportError,
    UnexpectedResponse,
)
from kimidocs.kimi.limits import RateLimiter, RateLimits
from kimidocs.kimi.policy import apply_policy, should_stream
from kimidocs.kimi.retry import RetryPolicy

KEY = "sk-test-client-KEY-0000"
BODY = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}

# --- a scripted loopback server ---------------------------------------------------------------------------

Action = Callable[[BaseHTTPRequestHandler], None]


def completion(content: str = "ok", usage: dict | None = None, **extra) -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "kimi-k2.5",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        **extra,
    }


def reply_json(status: int, body: object, headers: dict[str, str] | None = None) -> Action:
    def act(h: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Msh-Request-Id", f"req-{status}")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    return act


def reply_sse(chunks: list[dict | str], *, done: bool = True) -> Action:
    """An SSE body ended by connection close; `done=False` leaves out `data: [DONE]` (a cut stream)."""

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        for chunk in chunks:
            payload = chunk if isinstance(chunk, str) else json.dumps(chunk)
            h.wfile.write(f"data: {payload}\n\n".encode())
            h.wfile.flush()
        if done:
            h.wfile.write(b"data: [DONE]\n\n")
        h.close_connection = True

    return act


def drop_mid_body() -> Action:
    """Promise 1000 bytes, send 20, hang up: a connection lost mid-answer."""

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"choices": [{"mess')
        h.wfile.flush()
        h.close_connection = True

    return act


def stall(seconds: float) -> Action:
    def act(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        h.close_connection = True

    return act


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


@dataclass
class ScriptedServer:
    base_url: str
    script: list[Action] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def then(self, *actions: Action) -> ScriptedServer:
        self.script.extend(actions)
        return self

    def next_action(self, path: str) -> Action:
        with self.lock:
            if self.script:
                return self.script.pop(0)
        if path.endswith("/models"):
            return reply_json(200, {"object": "list", "data": [{"id": "kimi-k2.6"}, {"id": "kimi-k3"}]})
        return reply_json(200, completion())


def _handler_class(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with server.lock:
                server.seen.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                         json.loads(raw) if raw else None)
                )  # fmt: skip
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                server.next_action(self.path)(self)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(scripted))
    httpd.daemon_threads = True
    scripted.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield scripted
    httpd.shutdown()
    httpd.server_close()


@dataclass
class Sleeps:
    """Records backoff waits instead of sleeping."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_client(server: ScriptedServer, *, max_retries: int = 4, **kw) -> tuple[KimiClient, Sleeps]:
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=max_retries, base_s=0.5, cap_s=4.0, sleep=sleeps)
    return KimiClient(server.base_url, KEY, retry_policy=policy, **kw), sleeps


# --- usage shapes (pure) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"usage": {"prompt_tokens": 19, "completion_tokens": 21, "cached_tokens": 10}},
                     Usage(19, 10, 21), id="top-level-cached_tokens"),
        pytest.param({"usage": {"prompt_tokens": 1113, "completion_tokens": 5,
                                "prompt_tokens_details": {"cached_tokens": 1024}}},
                     Usage(1113, 1024, 5), id="prompt_tokens_details"),
        pytest.param({"usage": {"prompt_tokens": 50, "completion_tokens": 5, "cached_tokens": 30,
                                "prompt_tokens_details": {"cached_tokens": 30}}},
                     Usage(50, 30, 5), id="both"),
        pytest.param({"choices": [{"delta": {}, "finish_reason": "stop",
                                   "usage": {"prompt_tokens": 19, "completion_tokens": 13,
                                             "cached_tokens": 8}}]},
                     Usage(19, 8, 13), id="choices0-usage"),
        pytest.param({"usage": {"prompt_tokens": 7, "completion_tokens": 1}}, Usage(7, 0, 1),
                     id="no-cache-field"),
        pytest.param({"usage": {"prompt_tokens": 7, "completion_tokens": 1, "cached_tokens": None,
                                "prompt_tokens_details": {"cached_tokens": 4}}},
                     Usage(7, 4, 1), id="null-top-level-falls-back"),
        pytest.param({"choices": [{"message": {"content": "x"}}]}, None, id="absent"),
    ],
)  # fmt: skip
def test_parse_usage_shapes(payload, expected):
    assert parse_usage(payload) == expected


def test_parse_completion_keeps_reasoning_apart_and_tool_calls():
    answer = parse_completion(
        {
            "model": "kimi-k2.5",
            "choices": [{"message": {"content": "A", "reasoning_content": "think",
                                     "tool_calls": [{"id": "functions.f:0", "type": "function",
                                                     "function": {"name": "f", "arguments": "{}"}}]},
                         "finish_reason": "tool_calls"}],
        }
    )  # fmt: skip
    assert (answer.content, answer.reasoning_content, answer.finish_reason) == ("A", "think", "tool_calls")
    assert answer.tool_calls[0]["function"]["name"] == "f"
    assert answer.usage is None


def test_stream_accumulator_joins_tool_call_fragments():
    acc = StreamAccumulator()
    acc.add(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c0", "function": {"name": "get", "arguments": '{"a"'}}
                        ]
                    }
                }
            ]
        }
    )
    acc.add({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]})
    acc.add({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
    answer = acc.answer()
    assert answer.tool_calls == (
        {"id": "c0", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}},
    )
    assert answer.finish_reason == "tool_calls"


# --- request policy (pure) --------------------------------------------------------------------------------


def test_policy_strips_fixed_sampling_and_disables_thinking():
    body = {"messages": [], "temperature": 0.2, "top_p": 0.9, "n": 1, "presence_penalty": 0,
            "frequency_penalty": 0, "response_format": {"type": "json_object"}, "reasoning_effort": "low",
            "max_tokens": 100}  # fmt: skip
    out = apply_policy(body, get_model("kimi-k2.5"))
    assert out == {
        "model": "kimi-k2.5",
        "messages": [],
        "response_format": {"type": "json_object"},
        "thinking": {"type": "disabled"},
        "max_tokens": 100,
    }
    assert "temperature" in body  # the input is not mutated


def test_policy_keeps_sampling_where_the_model_allows_it_and_enables_thinking_on_request():
    legacy = apply_policy({"messages": [], "temperature": 0.3}, get_model("moonshot-v1-128k"))
    assert legacy["temperature"] == 0.3
    assert "thinking" not in legacy
    assert legacy["max_tokens"] == get_model("moonshot-v1-128k").max_output
    thinking = apply_policy({"messages": []}, get_model("kimi-k2.5"), thinking=True)
    assert thinking["thinking"] == {"type": "enabled"}


def test_policy_refuses_a_request_over_the_window():
    model = get_model("kimidocs-test-8k")
    assert (
        apply_policy({"messages": [], "max_tokens": 1_000}, model, prompt_tokens=7_192)["max_tokens"] == 1_000
    )
    with pytest.raises(ContextLengthExceeded) as info:
        apply_policy({"messages": [], "max_tokens": 1_000}, model, prompt_tokens=7_193)
    assert (info.value.window, info.value.requested, info.value.status) == (8_192, 8_193, None)


def test_should_stream():
    assert not should_stream(2_000, 1_024)
    assert should_stream(2_000, 16_000)
    assert should_stream(200_000, 1_024)


def test_rough_prompt_tokens_counts_text_and_images():
    msgs = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "x" * 300}, {"type": "image_url", "image_url": {}}],
        }
    ]
    assert rough_prompt_tokens(msgs) == 100 + 1_000 + 4


# --- JSON calls over a socket -----------------------------------------------------------------------------


def test_json_call_sends_the_key_and_reads_usage(server):
    usage = {"prompt_tokens": 1113, "completion_tokens": 5, "cached_tokens": 1024}
    server.then(reply_json(200, completion("hi", usage)))
    client, sleeps = make_client(server)
    with client:
        result = client.chat({**BODY, "stream": True})
    assert result.content == "hi"
    assert result.usage == Usage(1113, 1024, 5)
    assert (result.attempts, result.http_status, result.request_id) == (1, 200, "req-200")
    assert result.ttft_ms is None and result.latency_ms > 0
    assert server.seen[0].path == "/v1/chat/completions"
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "stream" not in server.seen[0].body  # a non-streamed call never asks for SSE
    assert sleeps.waits == []


def test_server_errors_are_retried_then_succeed(server):
    boom = {"error": {"type": "server_error", "message": "boom"}}
    server.then(reply_json(500, boom), reply_json(503, {}), reply_json(200, completion("third time")))
    retries = []
    client, sleeps = make_client(server, on_retry=lambda n, e, w: retries.append((n, type(e), w)))
    with client:
        result = client.chat(BODY)
    assert (result.content, result.attempts) == ("third time", 3)
    assert [(n, cls) for n, cls, _ in retries] == [(1, ServerError), (2, ServerError)]
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0  # full jitter under base * 2^n
    assert len(server.seen) == 3


def test_retries_give_up_with_the_last_error_and_attempt_count(server):
    server.then(*[reply_json(502, "bad gateway") for _ in range(3)])
    client, sleeps = make_client(server, max_retries=2)
    with client, pytest.raises(ServerError) as info:
        client.chat(BODY)
    assert info.value.attempts == 3
    assert len(server.seen) == 3 and len(sleeps.waits) == 2


def test_rate_limit_honours_retry_after(server):
    limited = {
        "error": {
            "type": "rate_limit_reached_error",
            "message": "max RPM: 3, please try again after 9 seconds",
        }
    }
    server.then(reply_json(429, limited, {"Retry-After": "2"}), reply_json(200, completion()))
    client, sleeps = make_client(server)
    with client:
        result = client.chat(BODY)
    assert result.attempts == 2
    assert 2.0 <= sleeps.waits[0] <= 2.2  # the header wins over the text, plus at most 10% jitter


def test_rate_limit_wait_from_message_when_no_header(server):
    text = "request reached organization max concurrency: 1, please try again after 3 seconds"
    server.then(reply_json(429, {"error": {"type": "rate_limit_reached_error", "message": text}}))
    client, sleeps = make_client(server)
    with client:
        client.chat(BODY)
    assert 3.0 <= sleeps.waits[0] <= 3.3


def test_daily_limit_is_not_spun_on(server):
    text = "request reached organization TPD rate limit, current:1500000, limit:1500000"
    server.then(
        reply_json(
            429, {"error": {"type": "rate_limit_reached_error", "message": text}}, {"retry-after": "1152"}
        )
    )
    client, sleeps = make_client(server)
    with client, pytest.raises(RateLimited) as info:
        client.chat(BODY)
    assert (info.value.kind, info.value.retry_after, info.value.attempts) == ("tpd", 1152.0, 1)
    assert info.value.fatal_for_run
    assert sleeps.waits == [] and len(server.seen) == 1


@pytest.mark.parametrize(
    ("status", "type_", "cls"),
    [
        (401, "invalid_authentication_error", AuthenticationError),
        (429, "exceeded_current_quota_error", QuotaExceeded),
    ],
)
def test_final_errors_are_not_retried(server, status, type_, cls):
    server.then(reply_json(status, {"error": {"type": type_, "message": "no"}}))
    client, sleeps = make_client(server)
    with client, pytest.raises(cls):
        client.chat(BODY)
    assert len(server.seen) == 1 and sleeps.waits == []


def test_model_not_found_lists_the_accounts_models(server):
    text = "Not found the model kimi-k2.5 or Permission denied"
    server.then(reply_json(404, {"error": {"type": "resource_not_found_error", "message": text}}))
    client, _ = make_client(server)
    with client, pytest.raises(ModelNotFound) as info:
        client.chat(BODY)
    assert info.value.available == ("kimi-k2.6", "kimi-k3")
    assert "kimi-k2.6, kimi-k3" in str(info.value)


def test_answer_without_choices_is_an_error_not_an_empty_result(server):
    server.then(reply_json(200, {"id": "x", "usage": {"prompt_tokens": 1}}))
    client, sleeps = make_client(server)
    with client, pytest.raises(UnexpectedResponse, match="without choices"):
        client.chat(BODY)
    assert len(server.seen) == 1 and sleeps.waits == []


def test_connection_dropped_mid_body_is_retried(server):
    server.then(drop_mid_body(), reply_json(200, completion("whole")))
    client, _ = make_client(server)
    with client:
        result = client.chat(BODY)
    assert (result.content, result.attempts) == ("whole", 2)


def test_read_timeout_is_a_retried_transport_error(server):
    server.then(stall(1.5), stall(1.5))
    client, sleeps = make_client(server, max_retries=1, timeout_s=0.3)
    with client, pytest.raises(TransportError) as info:
        client.chat(BODY)
    assert "Timeout" in str(info.value)
    assert info.value.attempts == 2 and len(sleeps.waits) == 1


def test_refused_connection_is_a_transport_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    client = KimiClient(
        f"http://127.0.0.1:{port}/v1", KEY, retry_policy=RetryPolicy(max_retries=2, sleep=sleeps)
    )
    with client, pytest.raises(TransportError) as info:
        client.chat(BODY)
    assert info.value.attempts == 3 and KEY not in str(info.value)


# --- streaming --------------------------------------------------------------------------------------------


def sse_answer(reasoning: str = "", content: str = "Hello world", usage_in: str = "choice") -> list[dict]:
    usage = {"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32, "cached_tokens": 16}
    chunks: list[dict] = [{"model": "kimi-k2.5", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for piece in [reasoning[i : i + 4] for i in range(0, len(reasoning), 4)]:
        chunks.append({"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]})
    for piece in content.split(" "):
        chunks.append({"choices": [{"index": 0, "delta": {"content": piece + " "}}]})
    final: dict = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if usage_in == "choice":
        final["choices"][0]["usage"] = usage
    chunks.append(final)
    if usage_in == "top":
        chunks.append({"choices": [], "usage": usage})
    return chunks


@pytest.mark.parametrize("usage_in", ["choice", "top"])
def test_stream_collects_content_reasoning_usage_and_ttft(server, usage_in):
    server.then(reply_sse(sse_answer(reasoning="let me think", content="Hello big world", usage_in=usage_in)))
    client, _ = make_client(server)
    with client:
        result = client.chat(BODY, stream=True)
    assert result.content == "Hello big world "
    assert result.reasoning_content == "let me think"
    assert result.usage == Usage(19, 16, 13)
    assert result.finish_reason == "stop"
    assert result.ttft_ms is not None and result.ttft_ms <= result.latency_ms
    assert server.seen[0].body["stream"] is True
    assert server.seen[0].headers["accept"] == "text/event-stream"


def test_stream_cut_before_done_is_retried_never_short(server):
    server.then(reply_sse(sse_answer(content="partial answer")[:2], done=False), reply_sse(sse_answer()))
    client, _ = make_client(server)
    with client:
        result = client.chat(BODY, stream=True)
    assert (result.content, result.attempts) == ("Hello world ", 2)


def test_stream_cut_every_time_raises_stream_interrupted(server):
    server.then(*[reply_sse(sse_answer()[:3], done=False) for _ in range(2)])
    client, _ = make_client(server, max_retries=1)
    with client, pytest.raises(StreamInterrupted) as info:
        client.chat(BODY, stream=True)
    assert info.value.attempts == 2 and info.value.received_chars > 0


def test_stream_error_status_is_classified(server):
    server.then(
        reply_json(401, {"error": {"type": "incorrect_api_key_error", "message": "Incorrect API key"}})
    )
    client, _ = make_client(server)
    with client, pytest.raises(AuthenticationError):
        client.chat(BODY, stream=True)
    assert len(server.seen) == 1


def test_stream_request_answered_with_plain_json_still_works(server):
    server.then(reply_json(200, completion("not streamed")))
    client, _ = make_client(server)
    with client:
        assert client.chat(BODY, stream=True).content == "not streamed"


# --- other endpoints and the limiter ----------------------------------------------------------------------


def test_estimate_tokens_and_list_models(server):
    server.then(reply_json(200, {"code": 0, "data": {"total_tokens": 321}, "scode": "0x0", "status": True}))
    client, _ = make_client(server)
    with client:
        assert client.estimate_tokens("kimi-k2.5", BODY["messages"]) == 321
        assert [m["id"] for m in client.list_models()] == ["kimi-k2.6", "kimi-k3"]
    assert server.seen[0].path == "/v1/tokenizers/estimate-token-count"
    assert server.seen[0].body == {"model": "kimi-k2.5", "messages": BODY["messages"]}
    assert (server.seen[1].method, server.seen[1].path) == ("GET", "/v1/models")


def test_a_429_pauses_the_limiter_and_the_charge_is_settled(server):
    text = "request reached organization max concurrency: 4, please try again after 0 seconds"
    usage = {"prompt_tokens": 500, "completion_tokens": 5}
    server.then(
        reply_json(429, {"error": {"type": "rate_limit_reached_error", "message": text}}),
        reply_json(200, completion("ok", usage)),
    )
    lim = RateLimiter(RateLimits(concurrency=4, tpm=100_000), recover_s=3_600)
    client, _ = make_client(server, limiter=lim)
    with client:
        result = client.chat(BODY, tokens_est=2_000)
    assert result.attempts == 2
    state = lim.state()
    assert state.effective_concurrency == 1  # halved from what was in flight (0 + 1), not restored yet
    assert state.requests_last_minute == 2
    assert state.tokens_last_minute == 2_000 + 500 + 64  # the 429'd attempt's estimate + the settled charge
    assert state.in_flight == 0


# --- `kimidocs models` ------------------------------------------------------------------------------------


def _models_app():
    import typer

    from kimidocs.commands import models

    app = typer.Typer()
    models.register(app)
    app.command("noop")(lambda: None)  # two commands, so `models` is addressed by name as in the real CLI
    return app


def test_models_command_joins_the_account_list_to_our_table(server, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("KIMI_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "160")
    server.then(reply_json(200, {"data": [{"id": "kimi-k2.6"}, {"id": "kimi-k9-secret-preview"}]}))
    result = CliRunner().invoke(_models_app(), ["models", "--base-url", server.base_url])
    assert result.exit_code == 0, result.output
    assert "2 models on the account" in result.output
    assert "kimi-k9-secret-preview" in result.output and "unknown to kimidocs" in result.output
    assert "kimidocs-test-8k" not in result.output  # test models only with --all
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in result.output


def test_models_command_without_key_shows_the_table_only(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    monkeypatch.delenv("KIMI_API_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)  # no .env with a key here
    result = CliRunner().invoke(_models_app(), ["models", "--all"])
    assert result.exit_code == 0, result.output
    assert "showing kimidocs' model table only" in result.output
    assert "kimi-k2.5" in result.output and "kimidocs-test-8k" in result.output
