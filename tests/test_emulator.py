"""The Kimi emulator over real sockets, spoken to with plain httpx (and once with the project client)."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kimidocs.core.results import Summary, normalize_for_match, parse_summary
from kimidocs.emulator import EmulatorConfig, start_emulator_process
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.retry import RetryPolicy

PAGES = {
    1: "Master Services Agreement\nThis Agreement is made on January 5, 2020 between Acme Corporation and "
    "Jane Smith. It sets the terms of the services.",
    2: "The fee is $1,200 per month. Payment is due within 30 days of the invoice.",
    3: "Either party may end the agreement with 60 days notice. Notices go to the General Counsel.",
    4: "The agreement is governed by the laws of the State of New York. It was signed in 2021.",
}
SYSTEM = "You summarise documents as JSON. " * 120  # a long stable prefix (several cache blocks)


def pages_text(pages: dict[int, str]) -> str:
    return "\n".join(f'<page number="{n}">\n{t}\n</page>' for n, t in pages.items())


def chat_body(task: str = "Summarise the document.", **extra: Any) -> dict[str, Any]:
    body = {
        "model": "kimi-k2.5",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": pages_text(PAGES)},
            {"role": "user", "content": task},
        ],
        "response_format": {"type": "json_object"},
        "max_tokens": 2048,
        "thinking": {"type": "disabled"},
    }
    body.update(extra)
    return body


def client(handle, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=handle.base_url, headers={"Authorization": f"Bearer {key or handle.api_key}"}, timeout=10
    )


def wait_for(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    """Poll `condition()` until it holds (readiness, not a fixed sleep); `what` when it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def sse_chunks(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    chunks, done = [], False
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
        else:
            chunks.append(json.loads(data))
    return chunks, done


def test_json_answer_is_a_summary_citing_pages_inside_the_markers(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        response = c.post("/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert response.headers["msh-request-id"]
    data = response.json()
    choice = data["choices"][0]
    assert data["object"] == "chat.completion" and choice["finish_reason"] == "stop"
    assert "reasoning_content" not in choice["message"]  # thinking disabled
    summary = parse_summary(choice["message"]["content"])
    assert summary.title == "Master Services Agreement"
    assert summary.language == "en"
    assert summary.key_points and all(kp.pages for kp in summary.key_points)
    for kp in summary.key_points:
        (page,) = kp.pages
        assert page in PAGES
        assert kp.evidence and normalize_for_match(kp.evidence) in normalize_for_match(PAGES[page])
    assert [kp.pages[0] for kp in summary.key_points] == [1, 2, 3, 4]
    assert any(d.date == "2020-01-05" and d.pages == [1] for d in summary.dates)
    assert any(a.value == 1200 and a.currency == "USD" and a.pages == [2] for a in summary.amounts)
    assert "Acme Corporation" in {e.name for e in summary.entities}
    assert summary.summary.endswith("Covers pages 1-4.")
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_stream_reassembles_to_the_same_content_with_usage_last(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        plain = c.post("/chat/completions", json=chat_body()).json()
        body = chat_body(stream=True, stream_options={"include_usage": True}, thinking={"type": "enabled"})
        with c.stream("POST", "/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks, done = sse_chunks(response)
    assert done
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    kinds = [
        ("r" if "reasoning_content" in d else "c")
        for d in deltas
        if d.get("reasoning_content") or d.get("content")
    ]
    assert kinds[0] == "r" and "r" not in kinds[kinds.index("c") :]  # reasoning first, then content
    content = "".join(d.get("content") or "" for d in deltas)
    assert sum(1 for d in deltas if d.get("content")) > 2
    assert content == plain["choices"][0]["message"]["content"]
    final = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] == "stop"
    usage = final[0]["choices"][0]["usage"]
    assert usage["completion_tokens"] > plain["usage"]["completion_tokens"]  # reasoning is billed output
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage


def test_prefix_cache_hits_in_whole_blocks_only_after_completion(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        first = c.post("/chat/completions", json=chat_body("Task one.")).json()["usage"]
        second = c.post("/chat/completions", json=chat_body("A different task.")).json()["usage"]
        other_system = chat_body()
        other_system["messages"][0] = {"role": "system", "content": "Another system prompt."}
        third = c.post("/chat/completions", json=other_system).json()["usage"]
    assert first["cached_tokens"] == 0
    assert second["cached_tokens"] > 0 and second["cached_tokens"] % 256 == 0
    assert second["cached_tokens"] <= second["prompt_tokens"] - 5  # the differing task is not cached
    assert second["prompt_tokens_details"]["cached_tokens"] == second["cached_tokens"]
    assert third["cached_tokens"] == 0  # the prefix starts with the system prompt


def test_concurrent_requests_sharing_a_prefix_all_miss(make_emulator) -> None:
    """Both calls are admitted (their prefix looked up) before either answers: held until both are in
    flight, so the overlap is certain on any machine."""
    emu = make_emulator(hold=True)
    results: list[dict[str, Any]] = []

    def call(task: str) -> None:
        with client(emu) as c:
            results.append(c.post("/chat/completions", json=chat_body(task)).json()["usage"])

    threads = [threading.Thread(target=call, args=(f"Task {i}",)) for i in range(2)]
    for t in threads:
        t.start()
    while emu.stats()["in_flight"] < 2:
        time.sleep(0.01)
    emu.configure(hold=False)
    for t in threads:
        t.join()
    assert [u["cached_tokens"] for u in results] == [0, 0]
    assert emu.stats()["max_concurrency"] == 2
    with client(emu) as c:
        assert c.post("/chat/completions", json=chat_body("Task 3")).json()["usage"]["cached_tokens"] > 0


def test_wrong_or_missing_key_is_401(kimi_emulator) -> None:
    with client(kimi_emulator, key="sk-wrong") as c:
        wrong = c.post("/chat/completions", json=chat_body())
    missing = httpx.post(f"{kimi_emulator.base_url}/chat/completions", json=chat_body())
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {"type": "invalid_authentication_error", "message": "Invalid Authentication"}
    }
    assert missing.status_code == 401
    assert httpx.get(f"{kimi_emulator.base_url}/models").status_code == 401


@pytest.mark.parametrize("model", ["kimi-nonexistent", "kimi-k2-0905-preview"])
def test_unknown_or_retired_model_is_404(kimi_emulator, model: str) -> None:
    with client(kimi_emulator) as c:
        response = c.post("/chat/completions", json=chat_body(model=model))
        listed = [m["id"] for m in c.get("/models").json()["data"]]
    assert response.status_code == 404
    assert response.json()["error"] == {
        "type": "resource_not_found_error",
        "message": f"Not found the model {model} or Permission denied",
    }
    assert "kimi-k2.5" in listed and model not in listed


def test_prompt_plus_max_tokens_over_the_window_is_400_with_moonshots_message(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        prompt = c.post("/chat/completions", json=chat_body(model="kimidocs-test-8k", max_tokens=10)).json()
        n = prompt["usage"]["prompt_tokens"]
        response = c.post(
            "/chat/completions", json=chat_body(model="kimidocs-test-8k", max_tokens=8192 - n + 1)
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "Your request exceeded model token limit: 8192 (requested: 8193)"


def test_fixed_sampling_parameters_of_kimi_models(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        bad = c.post("/chat/completions", json=chat_body(temperature=0.3))
        ok = c.post("/chat/completions", json=chat_body(temperature=0.6, top_p=0.95, n=1))
        thinking_bad = c.post("/chat/completions", json=chat_body(temperature=0.6, thinking=None))
        thinking_ok = c.post(
            "/chat/completions", json=chat_body(temperature=1.0, thinking={"type": "enabled"})
        )
        both = c.post("/chat/completions", json=chat_body(reasoning_effort="high"))
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "type": "invalid_request_error",
        "message": "invalid temperature: only 0.6 is allowed for this model",
    }
    assert ok.status_code == 200 and thinking_ok.status_code == 200
    assert thinking_bad.json()["error"]["message"] == "invalid temperature: only 1 is allowed for this model"
    assert thinking_ok.json()["choices"][0]["message"]["reasoning_content"]
    assert both.status_code == 400 and "reasoning_effort" in both.json()["error"]["message"]


def test_tier0_rpm_429_with_retry_after_then_the_window_slides(make_emulator) -> None:
    emu = make_emulator(tier="tier0", time_scale=0.01)  # a minute lasts 0.6 s
    with client(emu) as c:
        statuses = [c.post("/chat/completions", json=chat_body(max_tokens=50)).status_code for _ in range(3)]
        limited = c.post("/chat/completions", json=chat_body(max_tokens=50))
        assert statuses == [200, 200, 200]
        assert limited.status_code == 429
        error = limited.json()["error"]
        assert error["type"] == "rate_limit_reached_error"
        who = "Your account org-emulator<ak-emulator> request reached organization"
        assert error["message"].startswith(f"{who} max RPM: 3, please try again after ")
        wait = float(limited.headers["retry-after"])
        assert 0 < wait <= 0.6
        assert f"after {limited.headers['retry-after']} seconds" in error["message"]
        time.sleep(wait + 0.05)
        assert c.post("/chat/completions", json=chat_body(max_tokens=50)).status_code == 200
    log = emu.requests("/chat/completions")
    assert [e["status"] for e in log] == [200, 200, 200, 429, 200]
    assert log[3]["error_type"] == "rate_limit_reached_error"


def test_tier0_concurrency_of_one(make_emulator) -> None:
    """The first request holds tier0's only slot until its client goes away (the `timeout` fault stalls it,
    on a raw socket this test closes), so the second one meets a full account however fast or slow the
    machine is; once the first client is gone the slot is free again."""
    import socket

    emu = make_emulator(tier="tier0", time_scale=0.01, timeout_sleep_s=600)
    emu.fail_next("timeout")
    payload = json.dumps(chat_body()).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {emu.host}:{emu.port}\r\n"
        f"Authorization: Bearer {emu.api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with client(emu) as c:
        with socket.create_connection((emu.host, emu.port)) as first:
            first.sendall(head + payload)
            wait_for(lambda: emu.stats()["in_flight"] == 1, "the first request never took the slot")
            second = c.post("/chat/completions", json=chat_body())
        wait_for(lambda: emu.stats()["in_flight"] == 0, "the first request's slot was never freed")
        third = c.post("/chat/completions", json=chat_body())
    assert second.status_code == 429 and third.status_code == 200
    assert "max concurrency: 1, please try again after" in second.json()["error"]["message"]
    assert second.headers["retry-after"]
    (rejected,) = [e for e in emu.requests("/chat/completions") if e["status"] == 429]
    assert rejected["concurrency_at_arrival"] == 1 and rejected["error_type"] == "rate_limit_reached_error"


def test_tpm_counts_max_tokens(make_emulator) -> None:
    emu = make_emulator(tpm=5_000, time_scale=0.01)
    with client(emu) as c:
        ok = c.post("/chat/completions", json=chat_body(max_tokens=1_000))
        over = c.post("/chat/completions", json=chat_body(max_tokens=3_000))
    assert ok.status_code == 200
    assert over.status_code == 429
    assert "TPM rate limit, current:" in over.json()["error"]["message"]
    assert "limit:5000" in over.json()["error"]["message"]


def test_fail_next_then_success_and_the_project_client_retries(kimi_emulator) -> None:
    kimi_emulator.fail_next("500", count=2)
    with client(kimi_emulator) as c:
        first = c.post("/chat/completions", json=chat_body())
        second = c.post("/chat/completions", json=chat_body())
        third = c.post("/chat/completions", json=chat_body())
    assert (first.status_code, second.status_code, third.status_code) == (500, 500, 200)
    assert first.json()["error"]["type"] == "server_error"

    kimi_emulator.fail_next("503")
    policy = RetryPolicy(max_retries=2, sleep=lambda _s: None)
    with KimiClient(kimi_emulator.base_url, kimi_emulator.api_key, retry_policy=policy) as kimi:
        result = kimi.chat(chat_body())
    assert result.attempts == 2 and result.finish_reason == "stop"
    assert [e["status"] for e in kimi_emulator.requests("/chat/completions")] == [500, 500, 200, 503, 200]


def test_fail_next_can_target_requests_by_content(kimi_emulator) -> None:
    kimi_emulator.fail_next("length", match="<partial ")
    with client(kimi_emulator) as c:
        plain = c.post("/chat/completions", json=chat_body())
        body = chat_body()
        body["messages"][1] = {
            "role": "user",
            "content": '<partial first_page="1" last_page="2">{}</partial>',
        }
        reduce = c.post("/chat/completions", json=body)
    assert plain.json()["choices"][0]["finish_reason"] == "stop"
    assert reduce.json()["choices"][0]["finish_reason"] == "length"
    assert [e["fault"] for e in kimi_emulator.requests()] == [None, "length"]


def test_truncated_stream_has_no_done(kimi_emulator) -> None:
    kimi_emulator.fail_next("truncate")
    with client(kimi_emulator) as c, c.stream("POST", "/chat/completions", json=chat_body(stream=True)) as r:
        chunks, done = sse_chunks(r)
    assert r.status_code == 200 and chunks and not done
    assert not any(ch["choices"][0]["finish_reason"] for ch in chunks)
    assert kimi_emulator.requests()[-1]["error_type"] == "stream_truncated"


def test_dropped_connection_gets_no_response(kimi_emulator) -> None:
    kimi_emulator.fail_next("drop")
    with client(kimi_emulator) as c:
        with pytest.raises(httpx.TransportError):
            c.post("/chat/completions", json=chat_body())
        assert c.post("/chat/completions", json=chat_body()).status_code == 200


def test_timeout_fault_stalls_until_the_client_gives_up(make_emulator) -> None:
    emu = make_emulator(timeout_sleep_s=30)
    emu.fail_next("timeout")
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"}) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/chat/completions", json=chat_body(), timeout=0.3)
        assert c.post("/chat/completions", json=chat_body(), timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while len(emu.requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    statuses = sorted((e["status"], e["fault"]) for e in emu.requests())
    assert statuses == [(200, None), (499, "timeout")]


def test_max_tokens_cuts_the_content_with_finish_reason_length(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        full = c.post("/chat/completions", json=chat_body()).json()["choices"][0]["message"]["content"]
        cut = c.post("/chat/completions", json=chat_body(max_tokens=20)).json()
        kimi_emulator.fail_next("invalid_json")
        broken = c.post("/chat/completions", json=chat_body()).json()["choices"][0]
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 20
    assert full.startswith(choice["message"]["content"]) and len(choice["message"]["content"]) < len(full)
    with pytest.raises(ValueError):
        json.loads(choice["message"]["content"])
    assert broken["finish_reason"] == "stop"
    with pytest.raises(ValueError):
        json.loads(broken["message"]["content"])


def test_estimate_token_count_equals_prompt_tokens(kimi_emulator) -> None:
    body = chat_body()
    with client(kimi_emulator) as c:
        estimate = c.post(
            "/tokenizers/estimate-token-count", json={"model": body["model"], "messages": body["messages"]}
        )
        usage = c.post("/chat/completions", json=body).json()["usage"]
    assert estimate.json() == {"data": {"total_tokens": usage["prompt_tokens"]}}


def test_tools_answer_with_a_tool_call_valid_for_the_parameters(kimi_emulator) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "record_fact",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "page": {"type": "integer", "minimum": 1},
                    "kind": {"type": "string", "enum": ["fee", "term"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["title", "page"],
            },
        },
    }
    body = chat_body(tools=[tool])
    del body["response_format"]
    with client(kimi_emulator) as c:
        data = c.post("/chat/completions", json=body).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "record_fact"
    args = json.loads(call["function"]["arguments"])
    assert args["page"] == 1 and args["kind"] == "fee" and isinstance(args["tags"], list)
    assert args["title"] == "Master Services Agreement"


def test_image_part_is_accepted_for_kimi_k25(kimi_emulator) -> None:
    image = base64.b64encode(b"\x89PNG" + b"\x00" * 996).decode()
    content = [
        {"type": "text", "text": '<page number="7">\n'},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        {"type": "text", "text": "\n</page>"},
    ]
    body = chat_body()
    body["messages"][1] = {"role": "user", "content": content}
    with client(kimi_emulator) as c:
        data = c.post("/chat/completions", json=body).json()
        text_only = chat_body()
        text_only["messages"][1] = {"role": "user", "content": '<page number="7">\n\n</page>'}
        without = c.post("/chat/completions", json=text_only).json()
    summary = parse_summary(data["choices"][0]["message"]["content"])
    assert summary.key_points[0].point == "Scanned page 7: image of 1000 bytes"
    assert summary.key_points[0].pages == [7]
    extra = data["usage"]["prompt_tokens"] - without["usage"]["prompt_tokens"]
    assert 1040 <= extra <= 1045  # 1000 tokens per image x token_ratio (+ the text split in two parts)


def test_image_part_is_refused_by_a_model_without_image_input(make_emulator) -> None:
    emu = make_emulator(models=["moonshot-v1-128k"])  # an account that still has the old text model
    body = chat_body(model="moonshot-v1-128k")
    del body["thinking"]
    body["messages"][1] = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
    with client(emu) as c:
        response = c.post("/chat/completions", json=body)
        listed = [m["id"] for m in c.get("/models").json()["data"]]
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "image" in response.json()["error"]["message"]
    assert listed == ["moonshot-v1-128k"]


def test_reduce_merges_partials_keeping_their_pages(kimi_emulator) -> None:
    parts = [
        (
            1,
            2,
            Summary(
                title="T", summary="Part one. Covers pages 1-2.", key_points=[{"point": "a", "pages": [2]}]
            ),
        ),
        (
            3,
            5,
            Summary(summary="Part two.", key_points=[{"point": "b", "pages": [5]}], entities=[{"name": "X"}]),
        ),
    ]
    text = "\n".join(
        f'<partial first_page="{a}" last_page="{b}">{s.model_dump_json()}</partial>' for a, b, s in parts
    )
    body = chat_body()
    body["messages"][1] = {"role": "user", "content": text}
    with client(kimi_emulator) as c:
        merged = parse_summary(
            c.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        )
    assert merged.title == "T"
    assert [(k.point, k.pages) for k in merged.key_points] == [("a", [2]), ("b", [5])]
    assert [e.name for e in merged.entities] == ["X"]
    assert merged.summary == "Part one. Part two. Covers pages 1-5."
    assert kimi_emulator.requests()[-1]["answer_kind"] == "reduce"


def test_packed_documents_get_one_summary_each(kimi_emulator) -> None:
    text = "\n".join(
        f'<document id="{doc}">\n{pages_text({1: body})}\n</document>'
        for doc, body in (("aaa", "Alpha report. It is short."), ("bbb", "Beta letter. Dear reader."))
    )
    body = chat_body()
    body["messages"][1] = {"role": "user", "content": text}
    with client(kimi_emulator) as c:
        content = c.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    docs = json.loads(content)["documents"]
    assert set(docs) == {"aaa", "bbb"}
    assert Summary.model_validate(docs["bbb"]).title == "Beta letter. Dear reader."


def test_other_schema_in_the_system_prompt_gets_a_matching_object(kimi_emulator) -> None:
    schema = {"type": "object", "properties": {"verdict": {"type": "boolean"}, "count": {"type": "integer"}}}
    body = chat_body()
    body["messages"][0] = {
        "role": "system",
        "content": f"Answer as JSON.\n```json\n{json.dumps(schema)}\n```",
    }
    with client(kimi_emulator) as c:
        content = c.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"verdict": True, "count": 1}


def test_request_log_and_runtime_config(kimi_emulator) -> None:
    with client(kimi_emulator) as c:
        c.post("/chat/completions", json=chat_body())
        c.post("/chat/completions", json=chat_body(model="nope"))
        root = kimi_emulator.base_url.removesuffix("/v1")
        assert httpx.post(f"{root}/_emulator/config", json={"latency_ms": 5}).json()["latency_ms"] == 5
        assert httpx.post(f"{root}/_emulator/config", json={"no_such_knob": 1}).status_code == 400
        logged = httpx.get(f"{root}/_emulator/requests").json()
    ok, missing = logged
    body = chat_body()
    assert ok["model"] == "kimi-k2.5" and ok["status"] == 200 and ok["stream"] is False
    assert ok["prompt_tokens"] > 0 and ok["cached_tokens"] == 0 and ok["completion_tokens"] > 0
    assert ok["max_tokens"] == 2048 and ok["finish_reason"] == "stop" and ok["thinking"] is False
    assert (ok["first_page"], ok["last_page"]) == (1, 4)
    assert ok["first_message_sha"] == missing["first_message_sha"]
    assert len(ok["request_hash"]) == 64 and ok["request_hash"] != missing["request_hash"]
    assert ok["concurrency_at_arrival"] == 0
    assert missing["status"] == 404 and missing["error_type"] == "resource_not_found_error"
    assert kimi_emulator.config.latency_ms == 5
    httpx.post(f"{root}/_emulator/reset")
    assert kimi_emulator.requests() == [] and body


def test_separate_process_with_jsonl_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with start_emulator_process(
        EmulatorConfig(log_file=str(log), tier="tier1"), workdir=tmp_path / "w"
    ) as proc:
        with client(proc) as c:
            assert c.post("/chat/completions", json=chat_body()).status_code == 200
        assert proc.chat_requests() == 1
        assert proc.stats()["chat_requests"] == 1
        assert proc.worker_env() == {"KIMI_BASE_URL": proc.base_url, "KIMI_API_KEY": "sk-emulator"}
    assert proc.proc.returncode is not None
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["path"], e["status"]) for e in lines] == [("/v1/chat/completions", 200)]


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "retry_after"),
    [
        ("502", 502, "server_error", False),
        ("overloaded", 429, "engine_overloaded_error", False),
        ("quota", 429, "exceeded_current_quota_error", False),
        ("429", 429, "rate_limit_reached_error", True),
    ],
)
def test_fail_next_kinds_have_moonshot_bodies(
    kimi_emulator, kind: str, status: int, error_type: str, retry_after: bool
) -> None:
    kimi_emulator.fail_next(kind)
    with client(kimi_emulator) as c:
        response = c.post("/chat/completions", json=chat_body())
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert ("retry-after" in response.headers) is retry_after
    assert kimi_emulator.requests()[-1]["fault"] == kind


def test_random_faults_are_reproducible_with_a_seed(make_emulator) -> None:
    def statuses(seed: int) -> list[int]:
        emu = make_emulator(seed=seed, error_5xx_rate=0.5)
        with client(emu) as c:
            return [c.post("/chat/completions", json=chat_body(max_tokens=50)).status_code for _ in range(12)]

    first, again = statuses(7), statuses(7)
    assert first == again
    assert 200 in first and any(s >= 500 for s in first)


def test_cache_entries_expire_after_the_ttl(make_emulator) -> None:
    """On a clock the test moves (the cache's own clock is replaceable): 2 s after the first request its
    prefix has expired; right after the second, it is there. No sleep, no race with the machine."""
    from kimidocs.emulator.cache import PrefixCache

    now = [1000.0]
    emu = make_emulator(cache_ttl_s=2)
    emu.state.cache = PrefixCache(lambda: now[0])
    with client(emu) as c:
        c.post("/chat/completions", json=chat_body("one"))
        now[0] += 2.01
        late = c.post("/chat/completions", json=chat_body("two")).json()["usage"]
        now[0] += 1.99
        soon = c.post("/chat/completions", json=chat_body("three")).json()["usage"]
    assert late["cached_tokens"] == 0
    assert soon["cached_tokens"] > 0


def test_batch_endpoints_need_the_key_and_answer_moonshots_envelope(kimi_emulator) -> None:
    base = kimi_emulator.base_url
    for method, path in [
        ("POST", "/files"),
        ("GET", "/files"),
        ("GET", "/files/file-x/content"),
        ("POST", "/batches"),
        ("GET", "/batches"),
        ("GET", "/batches/batch-x"),
        ("POST", "/batches/batch-x/cancel"),
    ]:
        answer = httpx.request(method, base + path)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["type"] == "invalid_authentication_error"
    with client(kimi_emulator) as c:
        missing = c.get("/batches/batch-x")
        upload = c.post(
            "/files",
            files={"file": ("in.jsonl", b'{"custom_id": "a"}\n', "application/jsonl")},
            data={"purpose": "batch"},
        )
        listed = c.get("/files").json()["data"]
        gone = c.delete(f"/files/{upload.json()['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_error"
    assert upload.status_code == 200 and upload.json()["bytes"] == 19 and upload.json()["object"] == "file"
    assert [f["id"] for f in listed] == [upload.json()["id"]]
    assert gone.json() == {"id": upload.json()["id"], "object": "file", "deleted": True}
    assert [e["path"] for e in kimi_emulator.requests()][-3:] == [
        "/v1/files",
        "/v1/files",
        gone.request.url.path,
    ]
