"""What a chat call returns, and the pure parsing of JSON and streamed answers into it.

No network here: the client feeds response bodies and SSE chunks in, so each shape Kimi has been seen
to send (kimi-api.md §2a, §6) is a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimidocs.core.records import Usage

__all__ = ["ChatResult", "CutAttempt", "StreamAccumulator", "parse_completion", "parse_usage"]


@dataclass(frozen=True, slots=True)
class CutAttempt:
    """An attempt whose stream the server began and that was cut before `[DONE]` (issue 22.3): the
    server read the prompt and wrote `partial` before the cut, so it bills the attempt although we got
    no answer. `usage` is the server's when a chunk carried it, else None (the caller estimates)."""

    attempt: int
    error: str
    partial: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One finished chat call.

    Attributes:
        content: the answer text (`message.content`, or the joined `delta.content` of a stream).
        reasoning_content: thinking text, kept apart from the answer (empty with thinking disabled).
        finish_reason: "stop", "length", "tool_calls", "content_filter"... as sent.
        usage: billed tokens; `cached_tokens` from `usage.cached_tokens` or `prompt_tokens_details`.
        tool_calls: the assistant's tool calls as plain dicts (OpenAI shape).
        http_status: status of the successful attempt.
        attempts: attempts made, 1 when the first one succeeded.
        latency_ms: request sent -> answer complete, for the successful attempt (excludes backoff waits).
        ttft_ms: request sent -> first content or reasoning token (streams only).
        request_id: `Msh-Request-Id` (or trace id) to quote to Moonshot support.
        model: the model that answered (from the body, else the request).
        usage_reported: False when the service sent no usage at all (then `usage` is zeros).
        cut_attempts: earlier attempts whose stream was cut after it began (billed by the server).
    """

    content: str
    reasoning_content: str
    finish_reason: str | None
    usage: Usage
    tool_calls: tuple[dict[str, Any], ...]
    http_status: int
    attempts: int
    latency_ms: float
    ttft_ms: float | None
    request_id: str | None
    model: str
    usage_reported: bool = True
    cut_attempts: tuple[CutAttempt, ...] = ()  # earlier attempts cut mid-stream: billed, no answer


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def parse_usage(payload: dict[str, Any]) -> Usage | None:
    """Usage from top-level `usage`, else `choices[0].usage`; None when neither is there.

    Cached tokens: `usage.cached_tokens` (Moonshot's documented field), else
    `usage.prompt_tokens_details.cached_tokens` (OpenAI's). Reading only the second shows 0% hits on
    kimi-k3, which sends only the first (kimi-api.md §2a).
    """
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        choices = payload.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        usage = first.get("usage")
    if not isinstance(usage, dict):
        return None
    cached = usage.get("cached_tokens")
    if cached is None:
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        cached_tokens=_int(cached),
        completion_tokens=_int(usage.get("completion_tokens")),
    )


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """The model-facing part of a response, before transport facts (status, timing) are added."""

    content: str
    reasoning_content: str
    finish_reason: str | None
    usage: Usage | None
    tool_calls: tuple[dict[str, Any], ...]
    model: str | None


def parse_completion(payload: dict[str, Any]) -> ParsedAnswer:
    """A non-streamed `chat.completion` body. Missing pieces become empty, never an exception."""
    choices = payload.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    tool_calls = message.get("tool_calls") or ()  # type: ignore[union-attr]
    return ParsedAnswer(
        content=message.get("content") or "",  # type: ignore[union-attr]
        reasoning_content=message.get("reasoning_content") or "",  # type: ignore[union-attr]
        finish_reason=first.get("finish_reason"),
        usage=parse_usage(payload),
        tool_calls=tuple(tc for tc in tool_calls if isinstance(tc, dict)),
        model=payload.get("model") if isinstance(payload.get("model"), str) else None,
    )


@dataclass
class StreamAccumulator:
    """Collects `chat.completion.chunk`s: content and reasoning apart, tool-call fragments by index.

    Usage comes from `chunk.usage` (OpenAI's `include_usage` chunk) else `choices[0].usage` (Moonshot's
    final chunk); the last one seen wins.
    """

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    chars: int = 0
    _tools: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, chunk: dict[str, Any]) -> bool:
        """Take one chunk; True when it carried the first visible token (content or reasoning)."""
        first_token = False
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = parse_usage(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            for key, sink in (("reasoning_content", self.reasoning), ("content", self.content)):
                piece = delta.get(key)  # type: ignore[union-attr]
                if isinstance(piece, str) and piece:
                    first_token = first_token or self.chars == 0
                    sink.append(piece)
                    self.chars += len(piece)
            for fragment in delta.get("tool_calls") or ():  # type: ignore[union-attr]
                self._add_tool_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return first_token

    def _add_tool_fragment(self, fragment: dict[str, Any]) -> None:
        call = self._tools.setdefault(
            _int(fragment.get("index")),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
        function = fragment.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def answer(self) -> ParsedAnswer:
        return ParsedAnswer(
            content="".join(self.content),
            reasoning_content="".join(self.reasoning),
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=tuple(self._tools[i] for i in sorted(self._tools)),
            model=self.model,
        )


#: Response header by which the project's emulator identifies itself (rows are labelled from it).
EMULATOR_HEADER = "X-Kimidocs-Emulator"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `GET /models` says about the server: its model ids, who owns them, whether it is our emulator."""

    model_ids: tuple[str, ...]
    owners: tuple[str, ...]
    emulator: bool
    models: tuple[dict[str, Any], ...] = ()  # the `data[]` entries as sent
