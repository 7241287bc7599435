"""Real answers of a real server, recorded once and replayed by the emulator in every CI run (issue 17).

A recording is one JSON file per request: the request body, the server's status and response body, the
seconds it took, and what model and licence produced it. The key is the SHA-256 of the request body in
canonical JSON (sorted keys, no spaces), without `stream`/`stream_options`: the same request asked
streamed or not replays the same answer. kimidocs builds its requests deterministically, so a run over
the same documents with the same settings asks exactly the recorded requests.

`record.py` writes recordings (a proxy in front of the real server); the emulator's `replay_dir` knob
answers from them and refuses any request it has no recording for (a 400 naming the key), so a change
in what kimidocs asks shows up as a clear failure, never as an invented answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["load_recordings", "replay_key", "save_recording", "sse_events"]

_NOT_IN_KEY = ("stream", "stream_options")


def replay_key(body: dict[str, Any]) -> str:
    """The request's identity: SHA-256 of its canonical JSON without the streaming switches."""
    kept = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_recording(
    folder: Path,
    body: dict[str, Any],
    status: int,
    response: Any,
    seconds: float,
    meta: dict[str, Any],
) -> Path:
    """Write one request's recording as `<key[:20]>.json` (small, diffable, reviewable)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = replay_key(body)
    record = {
        "key": key,
        **meta,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 3),
        "status": status,
        "request": {k: v for k, v in body.items() if k not in _NOT_IN_KEY},
        "response": response,
    }
    path = folder / f"{key[:20]}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_recordings(folder: Path) -> dict[str, dict[str, Any]]:
    """Every recording under `folder`, by key."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and "key" in record and "response" in record:
            found[record["key"]] = record
    return found


def sse_events(response: dict[str, Any]) -> Iterator[bytes]:
    """A recorded (non-streamed) completion as the SSE stream an OpenAI-compatible server sends: one
    chunk with the whole message, one with the finish reason and usage, then [DONE]."""
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    base = {k: response.get(k) for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    delta = {"role": "assistant", "content": message.get("content") or ""}
    yield _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    last = {"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}
    yield _event({**base, "choices": [last], "usage": response.get("usage")})
    yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"
