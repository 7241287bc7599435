"""BatchClient against the emulator's Batch API over real loopback HTTP: no mocks.

The emulator's batch durations are emulated seconds scaled by `time_scale` (0.001: validating 2 ms, a
batch 60 ms), so nothing here waits long, and nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from kimidocs.core.batching import BatchInputError, encode_lines
from kimidocs.core.costs import batch_call_cost, call_cost
from kimidocs.core.models import get_model
from kimidocs.core.results import parse_summary
from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread
from kimidocs.kimi.batch import BatchClient
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import (
    REDACTED,
    AuthenticationError,
    BatchWaitTimeout,
    InvalidRequest,
    KimiError,
    NotFound,
    PermissionDenied,
)
from kimidocs.kimi.policy import apply_policy
from kimidocs.kimi.retry import RetryPolicy

SCALE = 0.001
FAST = {"poll_s": 0.01, "max_poll_s": 0.05, "timeout_s": 30.0}
PARTIES = ["Acme Corporation", "Globex Limited", "Initech GmbH", "Umbrella Inc", "Hooli LLC", "Vandelay Co"]


def request(n: int, model: str = "kimi-k2.5", **extra) -> dict:
    raw = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You summarise documents as JSON. " * 40},
            {
                "role": "user",
                "content": f'<page number="1">\nService Agreement {n}\nThis agreement is made between '
                f"{PARTIES[n % len(PARTIES)]} and Jane Smith. "
                f"The fee is ${(n + 1) * 100} per month.\n</page>",
            },
            {"role": "user", "content": "Summarise the document."},
        ],
        "max_tokens": 600,
        "response_format": {"type": "json_object"},
        **extra,
    }
    return apply_policy(raw, get_model(model))


def requests(count: int, **kw) -> dict[str, dict]:
    return {f"doc-{n}:summary": request(n, **kw) for n in range(count)}


def emulator(**knobs):
    return run_emulator_in_thread(EmulatorConfig(time_scale=SCALE, **knobs))


@pytest.fixture
def emu() -> Iterator:
    with emulator() as handle:
        yield handle


def kimi(handle, key: str | None = None, **kw) -> KimiClient:
    policy = RetryPolicy(max_retries=3, base_s=0.01, cap_s=0.05)
    return KimiClient(handle.base_url, key or handle.api_key, retry_policy=policy, **kw)


def run(batches: BatchClient, reqs: dict[str, dict], **create):
    batch = batches.create(batches.upload(reqs), **create)
    return batches.wait(batch.id, **FAST)


# --- round trip -------------------------------------------------------------------------------------------


def test_upload_create_wait_results_round_trip_at_the_batch_price(emu) -> None:
    reqs = requests(4)
    with kimi(emu) as client:
        batches = BatchClient(client)
        file_id = batches.upload(reqs)
        assert batches.file_content(file_id) == encode_lines(reqs.items())  # stored byte for byte
        created = batches.create(file_id, window="24h", metadata={"run": "run-7"})
        assert created.status == "validating" and created.meta() == {"run": "run-7"}
        seen: list[str] = []
        done = batches.wait(created.id, on_poll=lambda b: seen.append(b.status), **FAST)
        results = batches.results(done)

    assert done.status == "completed" and seen[-1] == "completed"
    assert done.request_counts.total == done.request_counts.completed == 4 and done.error_file_id is None
    assert done.completed_at is not None and done.in_progress_at is not None
    assert set(results) == set(reqs)
    model = get_model("kimi-k2.5")
    for key, result in results.items():
        n = int(key.split(":")[0].split("-")[1])
        assert result.ok and result.finish_reason == "stop" and result.usage_reported
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
        assert result.usage.cached_tokens == 0  # no cache discount assumed inside a batch
        summary = parse_summary(result.content)  # a valid summary derived from that line's input
        assert summary.title == f"Service Agreement {n}"
        assert summary.entities and PARTIES[n % len(PARTIES)] in result.content
        assert f"{(n + 1) * 100}" in result.content
    billed = sum(batch_call_cost(r.usage, model) for r in results.values())
    real_time = sum(call_cost(r.usage, model) for r in results.values())
    assert billed == pytest.approx(0.6 * real_time)
    assert emu.stats()["spent_usd"] == pytest.approx(billed, abs=1e-6)
    lines = [e for e in emu.requests() if e["method"] == "BATCH"]
    assert sorted(e["custom_id"] for e in lines) == sorted(reqs)
    assert {e["batch_id"] for e in lines} == {done.id} and all(e["status"] == 200 for e in lines)
    assert emu.stats()["max_concurrency"] == 0  # batches take no real-time concurrency slot


def test_the_prefix_cache_can_be_switched_on_for_batches(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_cache=True)
    with kimi(handle) as client:
        results = BatchClient(client).results(run(BatchClient(client), requests(3)))
    # the long system message is a shared prefix: later lines read it from the cache
    assert sum(r.usage.cached_tokens for r in results.values()) > 0
    model = get_model("kimi-k2.5")
    assert handle.stats()["spent_usd"] == pytest.approx(
        sum(batch_call_cost(r.usage, model) for r in results.values()), abs=1e-6
    )


# --- failures ---------------------------------------------------------------------------------------------


def test_line_failures_land_in_the_error_file_and_the_rest_succeed(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_line_failure_rate=0.5, seed=3)
    reqs = requests(10)
    with kimi(handle) as client:
        batches = BatchClient(client)
        done = run(batches, reqs)
        results = batches.results(done)
    failed = {k for k, r in results.items() if not r.ok}
    assert done.status == "completed" and done.error_file_id and done.output_file_id
    assert 0 < len(failed) < 10 and set(results) == set(reqs)
    assert done.request_counts.failed == len(failed) and done.request_counts.completed == 10 - len(failed)
    for key in failed:
        assert results[key].status_code == 500 and results[key].error_type == "server_error"
    model = get_model("kimi-k2.5")
    paid = sum(batch_call_cost(r.usage, model) for r in results.values() if r.ok)
    assert handle.stats()["spent_usd"] == pytest.approx(paid, abs=1e-6)  # failed lines are not billed


def test_expiry_keeps_what_finished_and_reports_the_rest(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_expire_after_lines=2)
    reqs = requests(5)
    with kimi(handle) as client:
        batches = BatchClient(client)
        done = run(batches, reqs)
        results = batches.results(done)
    assert done.status == "expired" and done.expired_at is not None
    ok = [k for k, r in results.items() if r.ok]
    late = [k for k, r in results.items() if r.error_type == "batch_expired"]
    assert len(ok) == 2 and len(late) == 3 and set(ok) | set(late) == set(reqs)
    assert all(results[k].status_code is None for k in late)


def test_a_batch_expires_when_its_window_runs_out(make_emulator) -> None:
    # 12h window x 1e-5 = 0.43 s; the work would take 24h x 1e-5 = 0.86 s
    handle = make_emulator(time_scale=1e-5, batch_processing_s=86_400, batch_validate_s=0, batch_finalize_s=0)
    with kimi(handle) as client:
        batches = BatchClient(client)
        done = run(batches, requests(6), window="12h")
        results = batches.results(done)
    assert done.status == "expired"
    assert sum(r.error_type == "batch_expired" for r in results.values()) >= 1 and len(results) == 6


def test_invalid_input_fails_the_batch_at_validation_with_line_numbers(emu) -> None:
    good = encode_lines([("a", request(0))]).decode()
    lines = [
        good.strip(),
        good.strip(),  # duplicate custom_id
        json.dumps({"custom_id": "c", "method": "GET", "url": "/v1/chat/completions", "body": request(1)}),
        json.dumps({"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": request(2)}),
        "{not json",
        json.dumps({"custom_id": "f", "method": "POST", "url": "/v1/chat/completions"}),
    ]
    with kimi(emu) as client:
        batches = BatchClient(client)
        uploaded = client.send_json(
            "POST",
            "/files",
            files={"file": ("bad.jsonl", ("\n".join(lines) + "\n").encode(), "application/jsonl")},
            data={"purpose": "batch"},
        )
        done = batches.wait(batches.create(uploaded["id"]).id, **FAST)
        assert batches.results(done) == {}
    assert done.status == "failed" and done.failed_at is not None and done.request_counts.total == 0
    codes = {(e.code, e.line) for e in done.errors}
    assert codes == {
        ("duplicate_custom_id", 2),
        ("invalid_method", 3),
        ("invalid_url", 4),
        ("invalid_json_line", 5),
        ("missing_required_parameter", 6),
    }
    assert not [e for e in emu.requests() if e["method"] == "BATCH"]  # nothing ran, nothing billed
    assert emu.stats()["spent_usd"] == 0


@pytest.mark.parametrize(
    ("model", "knobs", "code"),
    [
        ("kimi-k3", {}, "model_not_supported"),
        ("kimi-k2.6", {"batch_models": ["kimi-k2.5"]}, "model_not_supported"),
        ("kimi-k2.5", {"models": ["kimi-k2.6"]}, "model_not_found"),
    ],
)
def test_a_model_that_does_not_take_batches_fails_validation(make_emulator, model, knobs, code) -> None:
    handle = make_emulator(time_scale=SCALE, **knobs)
    with kimi(handle) as client:
        done = run(BatchClient(client), requests(2, model=model))
    assert done.status == "failed" and [e.code for e in done.errors] == [code]


def test_a_request_the_chat_endpoint_refuses_goes_to_the_error_file(emu) -> None:
    reqs = requests(3)
    reqs["doc-1:summary"] = {**reqs["doc-1:summary"], "temperature": 0.2}  # fixed at 0.6 for kimi-k2.5
    reqs["doc-2:summary"] = {**reqs["doc-2:summary"], "max_tokens": 300_000}  # over the window
    with kimi(emu) as client:
        batches = BatchClient(client)
        done = run(batches, reqs)
        results = batches.results(done)
    assert done.status == "completed" and done.request_counts.failed == 2
    assert results["doc-0:summary"].ok
    assert (
        results["doc-1:summary"].status_code == 400
        and "temperature" in results["doc-1:summary"].error_message
    )
    assert "token limit" in results["doc-2:summary"].error_message


def test_the_client_refuses_what_validation_would_refuse_before_uploading(emu) -> None:
    with kimi(emu) as client:
        batches = BatchClient(client, max_lines=2)
        with pytest.raises(BatchInputError, match="one model"):
            batches.upload({"a": request(0), "b": request(1, model="kimi-k2.6")})
        with pytest.raises(BatchInputError, match="more than 2"):
            batches.upload(requests(3))
    assert not emu.requests("/files")


def test_upload_limits_answer_kimis_file_errors(make_emulator) -> None:
    handle = make_emulator(
        time_scale=SCALE, batch_max_lines=2, batch_max_file_bytes=20_000, batch_max_files=1
    )
    with kimi(handle) as client:
        send = client.send_json

        def upload(data: bytes, name: str = "x.jsonl", purpose: str = "batch"):
            return send(
                "POST", "/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": purpose}
            )

        small = encode_lines([("a", request(0))])
        for data, name, purpose, words in [
            (b"", "x.jsonl", "batch", "File size is zero"),
            (small * 30, "x.jsonl", "batch", "File size is too large"),
            (encode_lines(requests(3).items()), "x.jsonl", "batch", "at most 2"),
            (small, "x.txt", "batch", ".jsonl"),
            (small, "x.jsonl", "file-extract", "Invalid purpose"),
        ]:
            with pytest.raises(InvalidRequest, match=words):
                upload(data, name, purpose)
        assert upload(small)["purpose"] == "batch"
        with pytest.raises(InvalidRequest, match="max file count 1"):
            upload(small)


def test_create_validates_the_window_and_the_file(emu) -> None:
    with kimi(emu) as client:
        batches = BatchClient(client)
        file_id = batches.upload(requests(1))
        with pytest.raises(BatchInputError):
            batches.create(file_id, window="2h")  # refused before sending
        with pytest.raises(InvalidRequest, match="between 12h and 7d"):
            client.send_json(
                "POST",
                "/batches",
                json={
                    "input_file_id": file_id,
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "8d",
                },
            )
        with pytest.raises(NotFound):
            batches.create("file-missing")


@pytest.mark.parametrize("knobs", [{"tier": "tier0"}, {"batch_api": False}])
def test_accounts_without_batch_get_the_documented_403(make_emulator, knobs) -> None:
    handle = make_emulator(time_scale=SCALE, **knobs)
    with kimi(handle) as client:
        batches = BatchClient(client)
        file_id = batches.upload(requests(1))
        with pytest.raises(PermissionDenied) as info:
            batches.create(file_id)
    assert info.value.fatal_for_run and "not open" in str(info.value)


# --- cancel, bounded polling, resume -----------------------------------------------------------------------


def test_cancel_stops_a_running_batch_and_keeps_what_finished(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_processing_s=60_000)  # 60 s for the batch
    with kimi(handle) as client:
        batches = BatchClient(client)
        batch = batches.create(batches.upload(requests(20)))
        for _ in range(500):  # cancel once it runs (a batch cancelled while validating has no lines)
            if batches.get(batch.id).status == "in_progress":
                break
            time.sleep(0.01)
        cancelling = batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        done = batches.wait(batch.id, **FAST)
        results = batches.results(done)
        with pytest.raises(InvalidRequest, match="cannot be cancelled"):
            batches.cancel(batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert len(results) == 20 and sum(r.error_type == "batch_cancelled" for r in results.values()) >= 19


def test_polling_is_bounded_by_the_timeout(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_processing_s=60_000)
    with kimi(handle) as client:
        batches = BatchClient(client)
        batch = batches.create(batches.upload(requests(2)))
        with pytest.raises(BatchWaitTimeout) as info:
            batches.wait(batch.id, poll_s=0.01, max_poll_s=0.02, timeout_s=0.1)
        assert info.value.batch_id == batch.id and info.value.status in ("validating", "in_progress")
        assert not info.value.retryable and "wait for the same batch id" in str(info.value)
        batches.cancel(batch.id)


def test_a_stopped_clock_cannot_make_wait_loop_forever(make_emulator) -> None:
    handle = make_emulator(time_scale=SCALE, batch_processing_s=60_000)
    slept: list[float] = []
    with kimi(handle) as client:
        batches = BatchClient(client, sleep=slept.append, clock=lambda: 0.0)
        batch = batches.create(batches.upload(requests(1)))
        with pytest.raises(BatchWaitTimeout) as info:
            batches.wait(batch.id, poll_s=1.0, max_poll_s=4.0, timeout_s=10.0)
        batches.cancel(batch.id)
    assert info.value.polls == 12 and len(slept) == 11  # floor(10 / 1) + 2 polls at most
    assert slept[:4] == [1.0, 1.5, 2.25, 3.375] and max(slept) == 4.0  # backoff, capped


def test_wait_refuses_an_unbounded_timeout(emu) -> None:
    with kimi(emu) as client, pytest.raises(ValueError):
        BatchClient(client).wait("batch-x", timeout_s=float("inf"))


def test_a_batch_id_survives_a_new_client(emu) -> None:
    reqs = requests(3)
    with kimi(emu) as first:
        batches = BatchClient(first)
        batch_id = batches.create(batches.upload(reqs)).id
    # the worker "restarts": a new client knows only the stored id
    with kimi(emu) as second:
        again = BatchClient(second)
        done = again.wait(batch_id, **FAST)
        results = again.results(done)
        assert again.get(batch_id).status == "completed"
        listed, _ = again.list()
        assert batch_id in [b.id for b in listed]
    assert done.status == "completed" and set(results) == set(reqs)
    assert all(r.ok for r in results.values())


def test_list_pages_newest_first_and_find_by_input(emu) -> None:
    with kimi(emu) as client:
        batches = BatchClient(client)
        files = [batches.upload(requests(1)) for _ in range(3)]
        made = [batches.create(f) for f in files]
        first, more = batches.list(limit=2)
        rest, more_after = batches.list(limit=2, after=first[-1].id)
        found = batches.find_by_input(files[0])
        assert batches.find_by_input("file-none") is None
    assert [b.id for b in first + rest] == [b.id for b in reversed(made)]
    assert more and not more_after and found is not None and found.id == made[0].id


class LoseFirstCreateAnswer(httpx.HTTPTransport):
    """Real HTTP; the first POST /batches reaches the server, then its answer is lost on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/batches") and not self.lost:
            self.lost = True
            response.read()
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def test_a_retried_create_reuses_the_batch_the_lost_answer_made(emu) -> None:
    with kimi(emu, transport=LoseFirstCreateAnswer()) as client:
        batches = BatchClient(client)
        batch = batches.create(batches.upload(requests(2)))
        done = batches.wait(batch.id, **FAST)
    creates = [e for e in emu.requests("/batches") if e["method"] == "POST"]
    assert len(creates) == 1 and done.status == "completed"  # one batch, paid once
    assert len(emu.state.batches) == 1


def test_the_key_never_appears_in_batch_errors(emu) -> None:
    secret = "sk-" + secrets.token_hex(16)
    with kimi(emu, key=secret, max_retries=0) as wrong:
        batches = BatchClient(wrong)
        calls = [
            lambda: batches.upload(requests(1)),
            lambda: batches.create("file-x"),
            lambda: batches.get("batch-x"),
            lambda: batches.wait("batch-x", **FAST),
            lambda: batches.cancel("batch-x"),
            lambda: batches.file_content("file-x"),
        ]
        for call in calls:
            with pytest.raises(AuthenticationError) as info:
                call()
            error = info.value
            for text in (str(error), repr(error), error.body or "", error.message):
                assert secret not in text
    with kimi(emu) as client:
        batches = BatchClient(client)
        # the server echoes what it was sent (an id that is by mistake the key): redacted on the way in
        with pytest.raises(NotFound) as info:
            batches.get(emu.api_key)
        assert emu.api_key not in str(info.value) and REDACTED in str(info.value)
        assert emu.api_key not in (info.value.body or "")
        assert emu.api_key not in repr(batches) and emu.api_key not in repr(client)


def test_batch_errors_are_kimi_errors(emu) -> None:
    with kimi(emu) as client, pytest.raises(KimiError):
        BatchClient(client).get("batch-missing")


def test_batches_work_against_the_emulator_in_its_own_process(kimi_emulator_process) -> None:
    kimi_emulator_process.configure(time_scale=SCALE)
    reqs = requests(2)
    with kimi(kimi_emulator_process) as client:
        batches = BatchClient(client)
        done = run(batches, reqs)
        results = batches.results(done)
    assert done.status == "completed" and all(results[k].ok for k in reqs)
    logged = [e for e in kimi_emulator_process.requests() if e["method"] == "BATCH"]
    assert sorted(e["custom_id"] for e in logged) == sorted(reqs)
