"""A chat body -> what the emulator reasons about: message texts, images, and the prompt's token sequence.

The token sequence is what the prefix cache hashes: tools first (any change there invalidates all that
follows, as on the real service), then per message a few role-marker pseudo-tokens and the o200k ids of its
text parts; an image part is `image_tokens` copies of a pseudo-token derived from its URL. Its length is our
raw count; Kimi's `prompt_tokens` is that times `token_ratio`, rounded up.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kimidocs.core import tokens

# Placeholder for an image inside a message's flattened text: the page parser sees where the image sits.
IMAGE_MARK = "\x00IMG:{size}\x00"

_ROLE_IDS = {"system": 1, "user": 2, "assistant": 3, "tool": 4}
_MARK_BASE = 0xFFFF0000
_IMAGE_BASE = 0xFE000000


class BadRequest(ValueError):
    """The body is not a chat request we (or Moonshot) would accept; the message goes to the client."""


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    text: str  # text parts joined, an IMAGE_MARK where an image part sat
    images: tuple[int, ...]  # decoded size in bytes of each image part


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[Message, ...]
    seq: bytes  # the prompt's token ids, 4 bytes each
    raw_tokens: int  # len(seq) // 4: our count
    prompt_tokens: int  # what Kimi would bill: raw * token_ratio, rounded up
    image_count: int

    def user_text(self) -> str:
        return "\n".join(m.text for m in self.messages if m.role == "user")

    def system_text(self) -> str:
        return "\n".join(m.text for m in self.messages if m.role == "system")


@lru_cache(maxsize=64)
def _text_ids(text: str) -> bytes:
    """o200k ids of a text as bytes (cached: tasks over one document resend the same document message)."""
    return array("I", tokens.encoding().encode_ordinary(text)).tobytes() if text else b""


def image_size(url: str) -> int:
    """Decoded bytes of a data URL (0 for a remote URL, which the emulator does not fetch)."""
    if not url.startswith("data:"):
        return 0
    _, _, payload = url.partition(",")
    payload = payload.strip()
    return max(len(payload) * 3 // 4 - payload[-2:].count("="), 0)


def _parts(content: Any, index: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append({"type": "text", "text": part})
            elif isinstance(part, dict):
                out.append(part)
            else:
                raise BadRequest(f"Invalid request: messages[{index}].content has an invalid part")
        return out
    raise BadRequest(f"Invalid request: messages[{index}].content must be a string or a list of parts")


def parse_prompt(
    messages: Sequence[Any],
    tools: Any,
    *,
    token_ratio: float,
    image_tokens: int,
    message_overhead: int,
) -> Prompt:
    """Flatten, count and serialise a request's prompt. Raises BadRequest on malformed messages."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Invalid request: messages must be a non-empty list")
    chunks: list[bytes] = []
    if tools:
        chunks.append(_text_ids(json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)))
    parsed: list[Message] = []
    image_count = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequest(f"Invalid request: messages[{i}] must be an object")
        role = msg.get("role")
        if role not in _ROLE_IDS:
            raise BadRequest(f"Invalid request: messages[{i}].role must be one of {', '.join(_ROLE_IDS)}")
        chunks.append(array("I", [_MARK_BASE + _ROLE_IDS[role]] * message_overhead).tobytes())
        texts: list[str] = []
        images: list[int] = []
        for part in _parts(msg.get("content"), i):
            kind = part.get("type")
            if kind == "text":
                text = str(part.get("text") or "")
                texts.append(text)
                chunks.append(_text_ids(text))
            elif kind == "image_url":
                url = (
                    (part.get("image_url") or {}).get("url")
                    if isinstance(part.get("image_url"), dict)
                    else None
                )
                if not isinstance(url, str) or not url:
                    raise BadRequest(f"Invalid request: messages[{i}] image_url part without a url")
                size = image_size(url)
                images.append(size)
                texts.append(IMAGE_MARK.format(size=size))
                pseudo = _IMAGE_BASE + int.from_bytes(hashlib.sha256(url.encode()).digest()[:3], "big")
                chunks.append(array("I", [pseudo] * image_tokens).tobytes())
            else:
                raise BadRequest(
                    f"Invalid request: messages[{i}] has an unsupported content part type {kind!r}"
                )
        if role == "assistant" and msg.get("tool_calls"):
            chunks.append(_text_ids(json.dumps(msg["tool_calls"], sort_keys=True, separators=(",", ":"))))
        if role == "assistant" and isinstance(msg.get("reasoning_content"), str):
            chunks.append(_text_ids(msg["reasoning_content"]))
        image_count += len(images)
        parsed.append(Message(role=role, text="".join(texts), images=tuple(images)))
    seq = b"".join(chunks)
    raw = len(seq) // 4
    return Prompt(
        messages=tuple(parsed),
        seq=seq,
        raw_tokens=raw,
        prompt_tokens=math.ceil(raw * token_ratio - 1e-9),
        image_count=image_count,
    )
