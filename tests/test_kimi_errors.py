"""The error table: each answer Kimi is known to give (kimi-api.md §7) -> our exception, retry, wait.

Each row goes through the real `KimiClient` with `httpx.MockTransport` (the sanctioned seam for response
shapes, DESIGN §9) and `max_retries=0`, so what is asserted is what callers receive.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import httpx
import pytest

from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import (
    RETRYABLE_ERRORS,
    APIError,
    AuthenticationError,
    ContentFiltered,
    ContextLengthExceeded,
    EndpointNotFound,
    EngineOverloaded,
    InvalidRequest,
    KimiError,
    LimitUnreachable,
    MissingApiKey,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TransportError,
    UnexpectedResponse,
    error_from_response,
    parse_retry_after,
    redact,
)
from kimidocs.kimi.retry import RetryPolicy

KEY = "sk-test-0123456789abcdefSECRET"
BASE = "https://api.moonshot.ai/v1"
BODY = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def err(type_: str, message: str) -> dict:
    return {"error": {"type": type_, "message": message}}


ACCOUNT = "Your account org-x<ak-y> request reached organization"
HIGH_RISK = "The request was rejected because it was considered high risk"
TEMPERATURE = "invalid temperature: only 0.6 is allowed for this model"
SUSPENDED = {"error": {"message": "Your account org-1 is suspended, please check balance"}}
NO_MODEL = "Not found the model kimi-k2.5 or Permission denied"
OVERLOADED = "The engine is currently overloaded, please try again later"
NOT_ACTIVE = "Your account org-x is not active, please check balance"

# (id, status, body, headers) -> (class, retryable, fatal_for_run, retry_after)
ROWS = [
    ("content_filter", 400, err("content_filter", HIGH_RISK),
     {}, ContentFiltered, False, False, None),
    ("invalid_request", 400, err("invalid_request_error", TEMPERATURE),
     {}, InvalidRequest, False, False, None),
    ("context_length", 400,
     err("invalid_request_error", "Your request exceeded model token limit: 262144 (requested: 269030)"),
     {}, ContextLengthExceeded, False, False, None),
    ("input_too_long", 400, err("invalid_request_error", "Input token length too long"),
     {}, ContextLengthExceeded, False, False, None),
    ("plain_text_400", 400, "bad request", {}, InvalidRequest, False, False, None),
    ("invalid_authentication", 401, err("invalid_authentication_error", "Invalid Authentication"),
     {}, AuthenticationError, False, True, None),
    ("incorrect_api_key", 401, err("incorrect_api_key_error", "Incorrect API key provided"),
     {}, AuthenticationError, False, True, None),
    ("permission_denied", 403, err("permission_denied_error", "The API you are accessing is not open"),
     {}, PermissionDenied, False, True, None),
    ("quota_403", 403, err("exceeded_current_quota_error", "You exceeded your current token quota"),
     {}, QuotaExceeded, False, True, None),
    ("suspended_403_untyped", 403, SUSPENDED,
     {}, QuotaExceeded, False, True, None),
    ("model_not_found", 404, err("resource_not_found_error", NO_MODEL),
     {}, ModelNotFound, False, False, None),
    ("batch_not_found", 404, err("resource_not_found_error", "batch batch-emu00000009 not found"),
     {}, NotFound, False, False, None),
    ("gateway_url_not_found", 404,
     {"code": 5, "error": "url.not_found", "message": "没找到对象", "scode": "0x5", "status": False},
     {}, EndpointNotFound, False, True, None),
    ("untyped_404", 404, "", {}, NotFound, False, False, None),
    ("engine_overloaded", 429, err("engine_overloaded_error", OVERLOADED),
     {}, EngineOverloaded, True, False, None),
    ("concurrency_try_again", 429, err("rate_limit_reached_error",
     f"{ACCOUNT} max concurrency: 1, please try again after 1 seconds"),
     {}, RateLimited, True, False, 1.0),
    ("rpm_retry_after_header", 429, err("rate_limit_reached_error",
     f"{ACCOUNT} max RPM: 3, please try again after 20 seconds"),
     {"Retry-After": "7"}, RateLimited, True, False, 7.0),
    ("tpm_no_wait", 429, err("rate_limit_reached_error",
     f"{ACCOUNT} TPM rate limit, current:510000, limit:500000"),
     {}, RateLimited, True, False, None),
    ("tpd_retry_after", 429, err("rate_limit_reached_error",
     f"{ACCOUNT} TPD rate limit, current:1500000, limit:1500000"),
     {"retry-after": "1152"}, RateLimited, True, True, 1152.0),
    ("tpd_no_wait", 429, err("rate_limit_reached_error",
     f"{ACCOUNT} TPD rate limit, current:1500000, limit:1500000"),
     {}, RateLimited, False, True, None),
    ("quota_429", 429, err("exceeded_current_quota_error", NOT_ACTIVE),
     {}, QuotaExceeded, False, True, None),
    ("untyped_429", 429, "", {}, RateLimited, True, False, None),
    ("untyped_quota_429", 429, {"error": {"message": "You exceeded your current token quota"}},
     {}, QuotaExceeded, False, True, None),
    ("server_error", 500, err("server_error", "Failed to extract file"), {}, ServerError, True, False, None),
    ("unexpected_output", 500, err("unexpected_output", "invalid state transition"),
     {}, ServerError, True, False, None),
    ("bad_gateway_html", 502, "<html>502 Bad Gateway</html>", {}, ServerError, True, False, None),
    ("unavailable_empty", 503, "", {"Retry-After": "3"}, ServerError, True, False, 3.0),
    ("platform_timeout", 504, "", {}, ServerError, True, False, None),
    ("not_implemented", 501, "", {}, ServerError, False, False, None),
    ("error_envelope_with_200", 200, err("rate_limit_reached_error", "max RPM: 3, try again after 2 seconds"),
     {}, RateLimited, True, False, 2.0),
]  # fmt: skip


def _respond(status: int, body: object, headers: dict[str, str]):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"msh-request-id": "req-42", **headers})

    return handler


def _client(handler, **kw) -> KimiClient:
    return KimiClient(
        BASE, KEY, transport=httpx.MockTransport(handler), retry_policy=RetryPolicy(max_retries=0), **kw
    )


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retryable", "fatal", "retry_after"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_error_table(status, body, headers, cls, retryable, fatal, retry_after):
    """This test ensures each known answer becomes the right class, retry decision and wait."""
    with _client(_respond(status, body, headers)) as client, pytest.raises(KimiError) as info:
        client.chat(BODY)
    error = info.value
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.fatal_for_run is fatal
    assert error.retry_after_s == retry_after
    assert error.attempts == 1
    assert isinstance(error, APIError)
    assert error.request_id == "req-42"
    assert error.status == status


@pytest.mark.parametrize(
    ("message", "kind", "current", "limit"),
    [
        (
            "request reached organization max concurrency: 50, please try again after 1 seconds",
            "concurrency",
            None,
            50,
        ),
        ("request reached organization max RPM: 200, please try again after 3 seconds", "rpm", None, 200),
        (
            "request reached organization TPM rate limit, current:2100000, limit:2000000",
            "tpm",
            2100000,
            2000000,
        ),
        ("request reached project TPM rate limit, current:10, limit:5", "tpm", 10, 5),
        (
            "request reached organization TPD rate limit, current:1500001, limit:1500000",
            "tpd",
            1500001,
            1500000,
        ),
        ("something new", "unknown", None, None),
    ],
)
def test_rate_limit_kind_is_parsed(message, kind, current, limit):
    error = error_from_response(429, json.dumps(err("rate_limit_reached_error", message)), {})
    assert isinstance(error, RateLimited)
    assert (error.kind, error.current, error.limit) == (kind, current, limit)


def test_context_length_numbers_are_parsed():
    error = error_from_response(
        400,
        json.dumps(
            err(
                "invalid_request_error", "Your request exceeded model token limit: 262144 (requested: 269030)"
            )
        ),
        {},
    )
    assert isinstance(error, ContextLengthExceeded)
    assert (error.window, error.requested) == (262144, 269030)


def test_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({}, "please try again after 2.5 seconds") == 2.5
    assert parse_retry_after({"retry-after": "soon"}, "no number here") is None


def test_retryable_list_is_the_single_source():
    """This test ensures the classes marked retryable are exactly those in RETRYABLE_ERRORS."""
    final = (QuotaExceeded, AuthenticationError, PermissionDenied, ModelNotFound, EndpointNotFound,
             InvalidRequest, ContextLengthExceeded, ContentFiltered, UnexpectedResponse, LimitUnreachable,
             MissingApiKey)  # fmt: skip
    assert set(RETRYABLE_ERRORS) == {
        RateLimited,
        EngineOverloaded,
        ServerError,
        TransportError,
        StreamInterrupted,
    }
    assert not any(issubclass(cls, RETRYABLE_ERRORS) for cls in final)


# --- secrets --------------------------------------------------------------------------------------------


def _echo_key(request: httpx.Request) -> httpx.Response:
    """A hostile/buggy server that echoes the Authorization header back in its error body."""
    auth = request.headers["authorization"]
    return httpx.Response(401, json=err("invalid_authentication_error", f"bad header {auth!r}"), headers={})


def test_key_never_in_error_text():
    with _client(_echo_key) as client, pytest.raises(AuthenticationError) as info:
        client.chat(BODY)
    error = info.value
    for text in (str(error), repr(error), error.message, error.body or "", repr(error.args)):
        assert KEY not in text
    assert "[REDACTED]" in error.message


def test_key_never_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(500, json=err("server_error", f"echo {request.headers['authorization']}"))
        return httpx.Response(200, json={"choices": [{"message": {"content": KEY}, "finish_reason": "stop"}]})

    policy = RetryPolicy(max_retries=3, sleep=lambda s: None)
    with KimiClient(BASE, KEY, transport=httpx.MockTransport(handler), retry_policy=policy) as client:
        client.chat(BODY)
    assert len(calls) == 3
    assert calls[0].headers["authorization"] == f"Bearer {KEY}"
    assert "retrying" in caplog.text  # the retries were logged...
    assert KEY not in caplog.text  # ...without the key


def test_key_not_in_client_repr():
    with _client(_echo_key) as client:
        assert KEY not in repr(client)
        assert "<set>" in repr(client)


def test_redact():
    assert redact(f"a {KEY} b {KEY}", KEY) == "a [REDACTED] b [REDACTED]"
    assert redact("nothing", None) == "nothing"
    assert redact("", KEY) == ""


def test_missing_key_is_helpful_and_loopback_needs_none():
    with pytest.raises(MissingApiKey) as info:
        KimiClient(BASE, None)
    assert "KIMI_API_KEY" in str(info.value)
    assert info.value.fatal_for_run
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json=err("invalid_authentication_error", "Invalid Authentication"))

    client = KimiClient("http://127.0.0.1:9/v1", None, transport=httpx.MockTransport(handler))
    with client, pytest.raises(AuthenticationError):
        client.chat(BODY)
    assert "authorization" not in seen[0].headers
