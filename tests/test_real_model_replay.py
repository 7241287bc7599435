"""A real model's answers, replayed in every CI run (issue 17).

`make real-model` ran SmolLM2-135M-Instruct (llama-cpp-python's OpenAI-compatible server) over
data/samples with the `summary` profile and the declared `contract` profile, and recorded every request
and answer under tests/data/real-model/ (bench/real_model.py, kimidocs/emulator/record.py). Here the
emulator answers from those recordings (`replay_dir`) over a real socket, with no model installed, and
the pipeline must reach the same outcomes it reached against the real server: a change in parsing,
repair or citation checking then fails on real model behaviour, deterministically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from prefect_fixture import REPO

from kimidocs.emulator.replay import replay_key, save_recording, sse_events

sys.path.insert(0, str(REPO / "bench"))
import real_model  # bench/real_model.py: the same cases as the recording

RECORDED = sorted(real_model.RECORDINGS.glob("*.json"))
EXPECTED = json.loads(real_model.OUTCOMES.read_text()) if real_model.OUTCOMES.exists() else []


def test_the_key_ignores_only_the_streaming_switches() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert replay_key(body) == replay_key({**body, "stream": True, "stream_options": {"include_usage": True}})
    assert replay_key(body) != replay_key({**body, "max_tokens": 6})
    assert replay_key(body) == replay_key(dict(reversed(list(body.items()))))  # key order does not matter


def test_recordings_are_there_and_say_what_made_them() -> None:
    assert len(RECORDED) >= 12, "make real-model records the real answers under tests/data/real-model/"
    for path in RECORDED:
        record = json.loads(path.read_text())
        assert record["key"] == replay_key(record["request"]) and path.name == f"{record['key'][:20]}.json"
        assert "SmolLM2" in record["model_note"] and "Apache-2.0" in record["licence"]
        assert record["request"]["model"] == real_model.MODEL


def test_an_unrecorded_request_is_refused_not_invented(tmp_path: Path, make_emulator) -> None:
    body = {"model": real_model.MODEL, "messages": [{"role": "user", "content": "recorded"}], "max_tokens": 8}
    answer = {"id": "x", "object": "chat.completion", "created": 0, "model": real_model.MODEL,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"a\": 1}"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}  # fmt: skip
    save_recording(tmp_path, body, 200, answer, 0.5, {"model_note": "test", "licence": "none"})
    emu = make_emulator(replay_dir=str(tmp_path), extra_models={real_model.MODEL: 8192}, identify=False)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=10) as client:
        same = client.post("/chat/completions", json=body)
        assert same.status_code == 200 and same.json() == answer
        streamed = client.post("/chat/completions", json={**body, "stream": True})
        assert (
            streamed.status_code == 200
            and "data: [DONE]" in streamed.text
            and '{\\"a\\": 1}' in streamed.text
        )
        other = client.post("/chat/completions", json={**body, "max_tokens": 9})
        assert other.status_code == 400 and "no recording" in other.json()["error"]["message"]
    assert b"".join(sse_events(answer)).count(b"data: ") == 3


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from prefect_fixture import clean_env

    from kimidocs.emulator import start_emulator_process

    work = tmp_path_factory.mktemp("replay")
    emulator = start_emulator_process(real_model.replay_config(), workdir=work / "emulator", env=clean_env())
    try:
        return real_model.run_cases(emulator.base_url, emulator.api_key, work)
    finally:
        emulator.stop()


def _key(row: dict) -> tuple[str, str]:
    return (row["profile"], row["document"])


def test_replay_reaches_the_outcomes_of_the_real_run(replayed: list[dict]) -> None:
    """Per document and profile: the same outcome, typed error, calls, repairs and dropped citations as
    against the real server (tests/data/real-model/outcomes.json, written by the recording run)."""
    assert EXPECTED, "outcomes.json is written by `make real-model`"
    fields = (
        "status",
        "error_type",
        "calls",
        "repairs",
        "pages_dropped",
        "quotes_dropped",
        "unreadable_items",
    )
    got = {_key(r): {f: r[f] for f in fields} for r in replayed}
    want = {_key(r): {f: r[f] for f in fields} for r in EXPECTED}
    assert got == want


def test_real_rows_are_labelled_openai_compatible(replayed: list[dict]) -> None:
    assert {r["backend"] for r in replayed} == {"openai-compatible"}


def test_every_document_ends_with_a_typed_outcome(replayed: list[dict]) -> None:
    """A small real model's answers are messy; none of them may crash the run or leave a document
    without a status, and a failure always names its typed error."""
    assert len(replayed) == len(real_model.PROFILES) * len(list(real_model.SAMPLES.iterdir()))
    for row in replayed:
        assert row["status"] in ("ok", "failed", "skipped"), row
        if row["status"] == "failed":
            assert row["error_type"], row
