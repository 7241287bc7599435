"""KimiClient against the project's Kimi emulator over real loopback HTTP: the production code, unchanged.

Rate-limit windows are compressed with the emulator's `time_scale` (0.01: a "minute" lasts 0.6 s), and our own
limiter runs on a virtual clock it shares with the emulator's account limits, so limits are exercised without
long waits. Nothing here asserts on elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from kimidocs.core.models import get_model
from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    EndpointNotFound,
    KimiError,
    ModelNotFound,
    QuotaExceeded,
    RateLimited,
    TransportError,
)
from kimidocs.kimi.limits import RateLimiter, RateLimits
from kimidocs.kimi.policy import apply_policy
from kimidocs.kimi.retry import RetryPolicy

SCALE = 0.01  # emulated seconds -> real seconds


def body(text: str = "The lease starts on 1 March 2026 and costs 1,200 EUR a month.", **kw) -> dict:
    raw = {
        "model": "kimi-k2.5",
        "messages": [
            {"role": "system", "content": "You summarise documents as JSON. " * 40},
            {"role": "user", "content": f"Document:\n{text}"},
            {"role": "user", "content": "Summarise the document."},
        ],
        "max_tokens": 400,
        "response_format": {"type": "json_object"},
    }
    return apply_policy(raw, get_model(raw["model"]), **kw)


@pytest.fixture
def emulator() -> Iterator:
    with run_emulator_in_thread(EmulatorConfig()) as handle:
        yield handle


def client_for(handle, *, key: str | None = None, max_retries: int = 4, **kw) -> KimiClient:
    policy = RetryPolicy(max_retries=max_retries, base_s=0.01, cap_s=0.05, max_wait_s=30.0)
    return KimiClient(handle.base_url, key or handle.api_key, retry_policy=policy, **kw)


def chat_log(handle) -> list[dict]:
    return handle.requests("/chat/completions")


# --- answers ----------------------------------------------------------------------------------------------


def test_json_call_reads_usage_and_cached_tokens(emulator):
    with client_for(emulator) as client:
        first = client.chat(body())
        second = client.chat(body())
    log = chat_log(emulator)
    assert first.usage.prompt_tokens == log[0]["prompt_tokens"] > 0
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == log[1]["cached_tokens"] > 0  # the shared prefix was read from cache
    assert second.content == first.content and first.finish_reason == "stop"
    assert (first.http_status, first.attempts, first.request_id) == (200, 1, log[0]["id"])


def test_stream_gives_the_same_answer_with_ttft_and_usage(emulator):
    with client_for(emulator) as client:
        plain = client.chat(body())
        streamed = client.chat(body(), stream=True)
    assert streamed.content == plain.content
    assert streamed.usage.prompt_tokens == plain.usage.prompt_tokens
    assert streamed.usage.completion_tokens == plain.usage.completion_tokens
    assert streamed.ttft_ms is not None and plain.ttft_ms is None
    assert chat_log(emulator)[1]["stream"] is True


def test_reasoning_is_kept_apart_when_thinking_is_on(emulator):
    with client_for(emulator) as client:
        result = client.chat(body(thinking=True), stream=True)
        quiet = client.chat(body())
    assert result.reasoning_content and result.content
    assert result.reasoning_content not in result.content
    assert quiet.reasoning_content == ""


def test_estimate_tokens_matches_the_billed_prompt(emulator):
    with client_for(emulator) as client:
        estimate = client.estimate_tokens("kimi-k2.5", body()["messages"])
        billed = client.chat(body()).usage.prompt_tokens
    assert estimate == billed


# --- errors that must not be retried ------------------------------------------------------------------------


def test_wrong_key_is_authentication_error_not_retried(emulator):
    with client_for(emulator, key="sk-wrong") as client, pytest.raises(AuthenticationError) as info:
        client.chat(body())
    assert info.value.fatal_for_run and info.value.attempts == 1
    assert emulator.chat_requests() == 1
    assert "sk-wrong" not in str(info.value)


def test_quota_is_not_retried(emulator):
    emulator.configure(quota_exceeded=True)
    with client_for(emulator) as client, pytest.raises(QuotaExceeded) as info:
        client.chat(body())
    assert info.value.fatal_for_run
    assert emulator.chat_requests() == 1


def test_context_overflow_reports_window_and_request(emulator):
    big = body("word " * 9_000) | {"model": "kimidocs-test-8k", "max_tokens": 1_000}
    with client_for(emulator) as client, pytest.raises(ContextLengthExceeded) as info:
        client.chat(big)
    assert info.value.window == 8_192 and info.value.requested > 8_192
    assert emulator.chat_requests() == 1


def test_unknown_model_lists_the_accounts_models(emulator):
    with client_for(emulator) as client, pytest.raises(ModelNotFound) as info:
        client.chat(body() | {"model": "kimi-k2-0905-preview"})
    assert "kimi-k2.5" in info.value.available
    assert "kimi-k2.5" in str(info.value)


def test_wrong_base_url_is_endpoint_not_found(emulator):
    wrong = emulator.base_url + "/beta"  # a path the gateway does not know
    policy = RetryPolicy(max_retries=2, sleep=lambda s: None)
    with (
        KimiClient(wrong, emulator.api_key, retry_policy=policy) as client,
        pytest.raises(EndpointNotFound) as info,
    ):
        client.list_models()
    assert info.value.fatal_for_run


# --- faults that are retried ------------------------------------------------------------------------------


def test_two_500s_then_success_takes_three_attempts(emulator):
    emulator.fail_next("500", count=2)
    retries = []
    with client_for(emulator, on_retry=lambda n, e, w: retries.append(e.status)) as client:
        result = client.chat(body())
    assert result.attempts == 3 and retries == [500, 500]
    assert [e["status"] for e in chat_log(emulator)] == [500, 500, 200]


@pytest.mark.parametrize("kind", ["502", "503", "504", "overloaded", "drop"])
def test_transient_faults_are_retried(emulator, kind):
    emulator.fail_next(kind)
    with client_for(emulator) as client:
        result = client.chat(body())
    assert result.attempts == 2 and result.content


def test_truncated_stream_is_retried_never_returned_short(emulator):
    with client_for(emulator) as client:
        whole = client.chat(body())
        emulator.fail_next("truncate")
        result = client.chat(body(), stream=True)
    assert result.attempts == 2
    assert result.content == whole.content


def test_stalled_answer_times_out_and_is_retried(emulator):
    emulator.configure(timeout_sleep_s=30)
    emulator.fail_next("timeout")
    retried = []
    with client_for(emulator, timeout_s=0.5, on_retry=lambda n, e, w: retried.append(type(e))) as client:
        result = client.chat(body())
    assert result.attempts == 2 and retried == [TransportError]


# --- rate limits --------------------------------------------------------------------------------------------


def test_tier0_rpm_429_retry_after_is_honoured_until_success(emulator):
    """Without a client-side limiter, the 4th call in a minute at tier0 gets 429 and waits as told."""
    emulator.configure(tier="tier0", time_scale=SCALE)
    waits: list[tuple[float | None, float]] = []
    with client_for(emulator, on_retry=lambda n, e, w: waits.append((e.retry_after_s, w))) as client:
        results = [client.chat(body()) for _ in range(4)]
    assert [r.attempts > 1 for r in results] == [False, False, False, True]
    assert waits and all(asked is not None and wait >= asked for asked, wait in waits)
    limited = [e for e in chat_log(emulator) if e["status"] == 429]
    assert len(limited) == len(waits) and {e["error_type"] for e in limited} == {"rate_limit_reached_error"}


class SharedVirtualClock:
    """One virtual clock for our limiter and the emulator's account limits: the limiter's waits move it,
    so a minute passes at once, and both sides see the same instant for every call. (On real time, a
    scheduling lag between our admission and the server's could make the result depend on the machine.)"""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None, "one caller at a time never waits for another's release"
        self.t += timeout


def test_limiter_at_tier0_prevents_the_429s(emulator):
    """The same calls through our limiter (tier0 numbers, a real-length minute on a shared virtual clock):
    zero 429s, with no margin for lag needed, and no real minute waited."""
    from kimidocs.emulator.limits import AccountLimits

    emulator.configure(tier="tier0")
    clock = SharedVirtualClock()
    emulator.state.limits = AccountLimits(clock.now)
    limiter = RateLimiter(RateLimits.for_tier("tier0"), clock=clock)  # its 1 s margin: virtual too
    with client_for(emulator, limiter=limiter) as client:
        results = [client.chat(body()) for _ in range(5)]
    assert all(r.attempts == 1 for r in results)
    assert [e["status"] for e in chat_log(emulator)] == [200] * 5
    assert clock.t >= 1000.0 + 60.0  # the 4th and 5th calls waited for a minute to pass


def test_a_server_429_pauses_the_limiter(emulator):
    emulator.fail_next("429")
    limiter = RateLimiter(RateLimits(concurrency=4))
    with client_for(emulator, limiter=limiter) as client:
        result = client.chat(body())
    assert result.attempts == 2
    assert limiter.state().requests_last_minute == 2


def _hammer(client: KimiClient, n: int) -> list[object]:
    """n threads released at once, each making one call; returns results or errors."""
    start = threading.Barrier(n)
    out: list[object] = [None] * n

    def call(i: int) -> None:
        start.wait()
        try:
            out[i] = client.chat(body(f"document number {i}"))
        except KimiError as error:
            out[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_eight_threads_through_the_limiter_never_exceed_concurrency_two(emulator):
    """The first two calls are held until both are in flight, so both slots are used on any machine."""
    emulator.configure(concurrency=2, hold=True)

    def release_when_two_in_flight() -> None:
        while emulator.stats()["in_flight"] < 2:
            time.sleep(0.01)
        emulator.configure(hold=False)

    releaser = threading.Thread(target=release_when_two_in_flight, daemon=True)
    releaser.start()
    limiter = RateLimiter(RateLimits(concurrency=2))
    try:
        with client_for(emulator, limiter=limiter, max_retries=0) as client:
            out = _hammer(client, 8)
    finally:
        emulator.configure(hold=False)
    releaser.join(60)
    assert all(not isinstance(r, KimiError) and r.attempts == 1 for r in out), out
    log = chat_log(emulator)
    assert [e["status"] for e in log] == [200] * 8
    assert max(e["concurrency_at_arrival"] for e in log) <= 1  # at most one other call in flight
    assert emulator.stats()["max_concurrency"] == 2  # and the two slots were used


def test_without_the_limiter_the_same_burst_is_rate_limited(emulator):
    """Control for the test above: the emulator does enforce concurrency 2. The first two calls are held
    in flight until the other six have been answered (429), so the burst overlaps on any machine."""
    emulator.configure(concurrency=2, hold=True)

    def release_when_six_refused() -> None:
        while sum(e["status"] == 429 for e in chat_log(emulator)) < 6:
            time.sleep(0.01)
        emulator.configure(hold=False)

    releaser = threading.Thread(target=release_when_six_refused, daemon=True)
    releaser.start()
    try:
        with client_for(emulator, max_retries=0) as client:
            out = _hammer(client, 8)
    finally:
        emulator.configure(hold=False)
    releaser.join(60)
    limited = [r for r in out if isinstance(r, RateLimited)]
    assert limited and all(r.kind == "concurrency" for r in limited)


def test_send_json_and_send_bytes_are_one_attempt_with_typed_errors(emulator) -> None:
    with client_for(emulator) as client:
        models = client.send_json("GET", "/models")
        listed = client.list_models()
        with pytest.raises(EndpointNotFound):
            client.send_bytes("GET", "/nowhere")
        with pytest.raises(KimiError) as info:
            client.send_json("GET", "/batches/batch-none")
    assert models["data"] and models["data"] == listed
    assert info.value.attempts == 1 and info.value.status == 404
    assert len(emulator.requests("/batches/batch-none")) == 1  # no retry layer inside
