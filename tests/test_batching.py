"""The Batch API protocol as pure functions: input files, windows, metadata, result lines, batch price."""

from __future__ import annotations

import json

import pytest

from kimidocs.core.batching import (
    BATCH_ENDPOINT,
    BatchInputError,
    BatchOutputError,
    encode_lines,
    parse_batch,
    parse_result_file,
    parse_result_line,
    parse_window,
    split_lines,
)
from kimidocs.core.costs import batch_call_cost, call_cost
from kimidocs.core.models import MODELS, NoBatchSupport, get_model
from kimidocs.core.records import Usage


def body(text: str = "hello", model: str = "kimi-k2.5") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 100}


def test_an_input_line_is_a_post_to_chat_completions_under_the_request_key() -> None:
    data = encode_lines([("key-1", {**body(), "stream": True}), ("key-2", body("é"))])
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ["key-1", "key-2"]
    assert all(line["method"] == "POST" and line["url"] == BATCH_ENDPOINT for line in lines)
    assert "stream" not in lines[0]["body"] and lines[1]["body"]["messages"][0]["content"] == "é"


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ([], "at least one"),
        ([("a", body()), ("a", body())], "duplicate"),
        ([("a", body()), ("b", body(model="kimi-k2.6"))], "one model"),
        ([("", body())], "custom_id"),
        ([("a", {"messages": []})], "no model"),
        ([(f"k{i}", body()) for i in range(4)], "more than 3 lines"),
    ],
)
def test_what_validation_would_refuse_is_refused_before_sending(requests, words) -> None:
    with pytest.raises(BatchInputError, match=words):
        encode_lines(requests, max_lines=3)


def test_the_byte_limit_is_checked() -> None:
    with pytest.raises(BatchInputError, match="bytes"):
        encode_lines([("a", body("x" * 500))], max_bytes=200)


def test_split_lines_makes_groups_that_fit_one_file_each() -> None:
    requests = [(f"k{i}", body("x" * 50)) for i in range(7)] + [("m", body(model="kimi-k2.6"))]
    one = len(encode_lines(requests[:1]))
    groups = list(split_lines(requests, max_lines=3, max_bytes=one * 3))
    assert [len(g) for g in groups] == [3, 3, 1, 1]  # the model change starts its own group
    assert [cid for g in groups for cid, _ in g] == [cid for cid, _ in requests]
    for group in groups:
        encode_lines(group, max_lines=3, max_bytes=one * 3)  # each one is a valid file
    with pytest.raises(BatchInputError, match="alone"):
        list(split_lines([("big", body("x" * 500))], max_bytes=100))


@pytest.mark.parametrize(
    ("window", "seconds"), [("12h", 43_200), ("24h", 86_400), ("1d", 86_400), ("7d", 604_800)]
)
def test_completion_windows_between_12h_and_7d(window: str, seconds: int) -> None:
    assert parse_window(window) == seconds


@pytest.mark.parametrize("window", ["11h", "8d", "24", "1w", "", "h"])
def test_other_windows_are_refused(window: str) -> None:
    with pytest.raises(BatchInputError):
        parse_window(window)


def test_a_batch_object_is_read_with_counts_files_metadata_and_errors() -> None:
    batch = parse_batch(
        {
            "id": "batch-1",
            "object": "batch",
            "status": "failed",
            "input_file_id": "file-1",
            "completion_window": "24h",
            "request_counts": {"completed": 0, "failed": 0, "total": 0},
            "created_at": 10,
            "failed_at": 12,
            "output_file_id": None,
            "metadata": {"run": "r1"},
            "errors": {
                "object": "list",
                "data": [{"code": "duplicate_custom_id", "message": "x", "line": 3}],
            },
        }
    )
    assert batch.terminal and not batch.has_results and batch.meta() == {"run": "r1"}
    assert batch.errors[0].code == "duplicate_custom_id" and batch.errors[0].line == 3
    with pytest.raises(BatchOutputError):
        parse_batch({"id": "batch-1", "status": "sleeping"})


def test_result_lines_success_error_answer_and_never_run() -> None:
    ok = parse_result_line(
        {
            "id": "r1",
            "custom_id": "a",
            "response": {
                "status_code": 200,
                "request_id": "req-1",
                "body": {
                    "model": "kimi-k2.5",
                    "choices": [{"index": 0, "message": {"content": "{}"}, "finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": 100,
                        "completion_tokens": 7,
                        "prompt_tokens_details": {"cached_tokens": 64},
                    },
                },
            },
            "error": None,
        }
    )
    assert ok.ok and ok.content == "{}" and ok.finish_reason == "stop" and ok.request_id == "req-1"
    assert ok.usage == Usage(100, 64, 7) and ok.usage_reported
    refused = parse_result_line(
        {
            "custom_id": "b",
            "response": {
                "status_code": 400,
                "body": {"error": {"type": "invalid_request_error", "message": "no"}},
            },
            "error": None,
        }
    )
    assert not refused.ok and refused.status_code == 400 and refused.error_type == "invalid_request_error"
    expired = parse_result_line(
        {"custom_id": "c", "response": None, "error": {"code": "batch_expired", "message": "too late"}}
    )
    assert not expired.ok and expired.status_code is None and expired.error_type == "batch_expired"
    with pytest.raises(BatchOutputError):
        parse_result_line({"response": None})


def test_a_result_file_is_keyed_by_custom_id_in_any_order() -> None:
    lines = [
        {"custom_id": c, "response": None, "error": {"code": "batch_cancelled", "message": ""}} for c in "ba"
    ]
    results = parse_result_file("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert sorted(results) == ["a", "b"]
    with pytest.raises(BatchOutputError, match="line 2"):
        parse_result_file('{"custom_id": "a", "response": null, "error": null}\nnot json\n')


def test_the_batch_price_is_the_model_tables_factor_on_every_price() -> None:
    model = get_model("kimi-k2.5")
    usage = Usage(prompt_tokens=10_000, cached_tokens=2_048, completion_tokens=500)
    assert model.batch_price_factor == 0.6
    assert batch_call_cost(usage, model) == pytest.approx(0.6 * call_cost(usage, model))
    with pytest.raises(NoBatchSupport):
        batch_call_cost(usage, get_model("kimi-k3"))


def test_only_models_documented_for_batch_have_a_batch_price() -> None:
    real = {m.id for m in MODELS.values() if m.supports_batch and not m.test_only}
    assert real == {"kimi-k2.5", "kimi-k2.6"}
