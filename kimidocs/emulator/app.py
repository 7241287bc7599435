"""The emulator's HTTP surface (Starlette): Moonshot's /v1 subset plus a /_emulator control plane.

    POST /v1/chat/completions                 JSON or SSE; validation, limits, cache, faults as Moonshot
    POST /v1/tokenizers/estimate-token-count  {"data": {"total_tokens": N}}, counted like prompt_tokens
    GET  /v1/models                           the account's models
    GET  /v1/users/me/balance                 starting balance minus what completed calls cost
    POST|GET /v1/files, GET|DELETE /v1/files/{id}, GET /v1/files/{id}/content
    POST|GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel   Batch API (batches.py)
    GET|POST /_emulator/config                read / change knobs (JSON object of EmulatorConfig fields)
    POST /_emulator/fail_next                 {"kind": "500", "count": 2, "match": null}: fail the next
                                              chat requests (only those whose body contains `match`)
    GET  /_emulator/requests                  the request log (JSON list); POST /_emulator/reset clears it
    GET  /_emulator/stats                     max concurrency seen, RPM/TPM now and max, statuses, spend

The control plane needs no key: the emulator is a loopback test and demo backend, never a real service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from kimidocs.core import tokens
from kimidocs.core.models import MODELS, ModelInfo
from kimidocs.core.responses import EMULATOR_HEADER
from kimidocs.emulator import answers, replay
from kimidocs.emulator.cache import block_chain
from kimidocs.emulator.knobs import TIERS, EmulatorConfig
from kimidocs.emulator.limits import format_seconds
from kimidocs.emulator.prompt import BadRequest, Prompt, parse_prompt
from kimidocs.emulator.state import EmulatorState
from kimidocs.emulator.tools import tool_schema_problem

FIXED_VALUES = {"top_p": 0.95, "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0}
THINKING_RESERVE = 32  # output tokens kept for reasoning_content when thinking is on
STREAM_PIECE_CHARS = 64
_SERVER_ERRORS = {
    "500": ("server_error", "Internal server error, please try again later"),
    "502": ("server_error", "Bad gateway, please try again later"),
    "503": ("server_error", "Service temporarily unavailable, please try again later"),
    "504": ("server_error", "Request timed out, please try again later"),
}


class ChatBody(BaseModel):
    """The fields we look at; everything else is accepted and ignored, as by the real service."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Any]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    thinking: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None


class ApiError(Exception):
    """An error answer in Moonshot's envelope."""

    def __init__(self, status: int, type_: str, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.retry_after = status, type_, message, retry_after


@dataclass
class Turn:
    """One chat request on its way through the emulator (also what its log entry is made of)."""

    request_id: str
    entry: dict[str, Any]
    started: float
    body: ChatBody | None = None
    model: ModelInfo | None = None
    prompt: Prompt | None = None
    chain: list[bytes] = field(default_factory=list)
    thinking: bool = False
    admitted: bool = False
    body_text: str = ""  # the raw body, for `fail_next(match=...)`


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Result:
    """What a chat call answers: the content after sizing and faults, and its token count."""

    answer: answers.Answer
    content: str
    reasoning: str
    tool_call: dict[str, Any] | None
    finish_reason: str
    completion_tokens: int

    def log_fields(self) -> dict[str, Any]:
        a = self.answer
        return {"answer_kind": a.kind, "first_page": a.first_page, "last_page": a.last_page, "task": a.task}


def _cut(text: str, limit: int) -> str:
    """`text` cut to its first `limit` tokens (what a model stopped by max_tokens would have sent)."""
    enc = tokens.encoding()
    return enc.decode(enc.encode_ordinary(text)[: max(limit, 0)])


def _pieces(text: str) -> list[str]:
    return [text[i : i + STREAM_PIECE_CHARS] for i in range(0, len(text), STREAM_PIECE_CHARS)]


def _break_json(content: str) -> str:
    """Deterministically invalid JSON: the first key loses its colon."""
    broken = content.replace('":', '" ', 1)
    return broken if broken != content else content + "}"


class EmulatorApp(Starlette):
    """Starlette that remembers each connection's transport, so a fault can drop it without a reply."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # uvicorn's send is a bound method of its request cycle
            scope["emulator.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        await super().__call__(scope, receive, send)


class Emulator:
    """Request handlers bound to one `EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # --- helpers -----------------------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    def available(self) -> dict[str, ModelInfo]:
        ids = self.config.models
        if ids is None:
            table = {k: m for k, m in MODELS.items() if not m.retired}
        else:
            table = {k: MODELS[k] for k in ids if k in MODELS}
        for model_id, window in (self.config.extra_models or {}).items():
            table[model_id] = ModelInfo(
                model_id,
                window,
                0.0,
                0.0,
                0.0,
                fixed_sampling=False,
                thinking_switch=False,
                max_output=window // 2,
                kimi=False,
            )
        return table

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"Msh-Request-Id": request_id, "Msh-Gid": f"emulator-{self.config.tier or 'unlimited'}"}
        if self.config.identify:
            headers[EMULATOR_HEADER] = "1"
        return headers

    def error_response(self, error: ApiError, request_id: str) -> JSONResponse:
        headers = self.headers(request_id)
        if error.retry_after is not None:
            headers["Retry-After"] = error.retry_after
        if error.type == "rate_limit_reached_error" and not self.config.retry_after_header:
            headers.pop("Retry-After", None)
        body = {"error": {"type": error.type, "message": error.message}}
        return JSONResponse(body, status_code=error.status, headers=headers)

    def check_key(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.config.api_key:
            raise ApiError(401, "invalid_authentication_error", "Invalid Authentication")

    def model_of(self, model_id: str) -> ModelInfo:
        model = self.available().get(model_id)
        if model is None:
            raise ApiError(
                404, "resource_not_found_error", f"Not found the model {model_id} or Permission denied"
            )
        return model

    def new_entry(self, request: Request, request_id: str) -> dict[str, Any]:
        return self.log_entry(request.method, request.url.path, request_id)

    def log_entry(self, method: str, path: str, request_id: str) -> dict[str, Any]:
        """A request-log entry with every field empty (batch lines use it without an HTTP request)."""
        return {
            "id": request_id,
            "time": time.time(),
            "method": method,
            "path": path,
            "model": None,
            "stream": False,
            "status": None,
            "error_type": None,
            "fault": None,
            "prompt_tokens": None,
            "cached_tokens": None,
            "completion_tokens": None,
            "max_tokens": None,
            "thinking": None,
            "finish_reason": None,
            "answer_kind": None,
            "first_page": None,
            "last_page": None,
            "task": None,
            "request_hash": None,
            "first_message_sha": None,
            "messages_sha": None,
            "concurrency_at_arrival": self.state.limits.in_flight,
            "duration_ms": None,
        }

    def finish(self, turn: Turn, status: int, error_type: str | None = None) -> None:
        turn.entry["status"] = status
        turn.entry["error_type"] = error_type
        turn.entry["duration_ms"] = round((time.perf_counter() - turn.started) * 1000, 3)
        self.state.record(turn.entry)

    async def read_json(self, request: Request, turn: Turn) -> dict[str, Any]:
        raw = await request.body()
        turn.entry["request_hash"] = _sha(raw)
        turn.body_text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(
                400, "invalid_request_error", "Invalid request: the body is not valid JSON"
            ) from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request_error", "Invalid request: the body must be a JSON object")
        return data

    # --- /v1/chat/completions ------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        turn = Turn(self.state.next_id(), {}, time.perf_counter())
        turn.entry = self.new_entry(request, turn.request_id)
        try:
            return await self._chat(request, turn)
        except ApiError as error:
            if turn.admitted:
                self.state.limits.release()
            self.finish(turn, error.status, error.type)
            return self.error_response(error, turn.request_id)

    async def _chat(self, request: Request, turn: Turn) -> Response:
        self.check_key(request)
        data = await self.read_json(request, turn)
        if self.config.replay_dir is not None:
            return self.replay(data, turn)
        body = turn.body = self.validate_body(data, turn)
        model = turn.model = self.model_of(body.model)
        cfg = self.config
        turn.thinking = turn.entry["thinking"] = self.check_params(body, model)
        max_tokens = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
        turn.entry["max_tokens"] = max_tokens
        try:
            prompt = await anyio.to_thread.run_sync(self.tokenize, body, cfg)
        except BadRequest as error:
            raise ApiError(400, "invalid_request_error", str(error)) from None
        turn.prompt, chain_scope = prompt, f"{cfg.api_key}|{model.id}"
        turn.entry["prompt_tokens"] = prompt.prompt_tokens
        budget = self.check_prompt(model, prompt, max_tokens)

        fault = self.state.draw_fault(turn.body_text)
        turn.entry["fault"] = fault
        if fault in _SERVER_ERRORS:
            raise ApiError(int(fault), *_SERVER_ERRORS[fault])
        if fault == "overloaded":
            raise ApiError(
                429, "engine_overloaded_error", "The engine is currently overloaded, please try again later"
            )
        if fault == "quota" or cfg.quota_exceeded:
            raise ApiError(
                429,
                "exceeded_current_quota_error",
                f"Your account {cfg.org_id}<{cfg.ak_id}> exceeded your current token quota, "
                "please check your plan and billing details",
            )
        if fault == "429":
            after = format_seconds(1.0 * cfg.time_scale, cfg.time_scale)
            raise ApiError(
                429,
                "rate_limit_reached_error",
                f"Your account {cfg.org_id}<{cfg.ak_id}> request reached organization max RPM: "
                f"{cfg.limit('rpm') or TIERS['tier1']['rpm']}, please try again after {after} seconds",
                after,
            )
        rejection = self.state.limits.admit(cfg, prompt.prompt_tokens + budget)
        if rejection is not None:
            after = format_seconds(rejection.retry_after, cfg.time_scale)
            raise ApiError(429, "rate_limit_reached_error", rejection.message, after)
        turn.admitted = True
        released = False
        try:
            turn.chain = await anyio.to_thread.run_sync(block_chain, prompt.seq, chain_scope, cfg.cache_block)
            # Blocks are hashed over our o200k ids, but usage counts Kimi tokens (ours x token_ratio):
            # the cached prefix is reported in Kimi tokens, whole blocks only, like prompt_tokens.
            hits = self.state.cache.lookup(turn.chain, self._ttl())
            cached = min(math.floor(hits * cfg.token_ratio) * cfg.cache_block, prompt.prompt_tokens)
            turn.entry["cached_tokens"] = cached
            result = await anyio.to_thread.run_sync(self.compose, body, prompt, turn.thinking, budget, fault)
            turn.entry.update(result.log_fields())
            while self.config.hold:  # a test holds admitted calls until it has seen them overlap
                await asyncio.sleep(0.005)
            if fault == "drop" or (fault == "truncate" and not body.stream):
                return await self.drop(request, turn)
            if fault == "timeout" and await self.stall(request):
                self.finish(turn, 499, "client_disconnected")
                return Response(status_code=499)
            if body.stream:
                released = True  # the stream releases its slot when it ends
                return self.stream(turn, result, cached, fault == "truncate")
            await asyncio.sleep(self._latency_s(result.completion_tokens))
            self.complete(turn, result, cached)
            return JSONResponse(
                self.completion_body(turn, result, cached), headers=self.headers(turn.request_id)
            )
        finally:
            if not released:
                self.state.limits.release()
                turn.admitted = False

    def replay(self, data: dict[str, Any], turn: Turn) -> Response:
        """The recorded answer of a real server to exactly this request (replay.py), as it was sent."""
        key = replay.replay_key(data)
        record = self.state.recordings(self.config.replay_dir).get(key)  # type: ignore[arg-type]
        turn.entry["model"] = data.get("model")
        turn.entry["stream"] = bool(data.get("stream"))
        if record is None:
            raise ApiError(400, "invalid_request_error", f"replay: no recording for request {key[:20]}")
        response, status = record["response"], int(record["status"])
        usage = (response.get("usage") if isinstance(response, dict) else None) or {}
        turn.entry["prompt_tokens"] = usage.get("prompt_tokens")
        turn.entry["completion_tokens"] = usage.get("completion_tokens")
        turn.entry["answer_kind"] = "replay"
        self.finish(turn, status)
        if status == 200 and data.get("stream"):
            return StreamingResponse(
                replay.sse_events(response),
                media_type="text/event-stream",
                headers=self.headers(turn.request_id),
            )
        return JSONResponse(response, status_code=status, headers=self.headers(turn.request_id))

    def validate_body(self, data: dict[str, Any], turn: Turn) -> ChatBody:
        turn.entry["model"] = data.get("model") if isinstance(data.get("model"), str) else None
        turn.entry["stream"] = bool(data.get("stream"))
        turn.entry["thinking_sent"] = "thinking" in data  # Kimi's switch; foreign models must not get it
        turn.entry["reasoning_effort"] = data.get("reasoning_effort")
        # Accepted and logged, not used: the emulator's cache matches prefixes, which a key cannot improve.
        turn.entry["prompt_cache_key"] = data.get("prompt_cache_key")
        fmt = data.get("response_format")
        turn.entry["response_format"] = fmt.get("type") if isinstance(fmt, dict) else None
        messages = data.get("messages")
        if isinstance(messages, list) and messages:
            turn.entry["first_message_sha"] = _sha(_canonical(messages[0]))
            turn.entry["messages_sha"] = _sha(_canonical(messages))
        try:
            return ChatBody.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "(body)"
            raise ApiError(400, "invalid_request_error", f"Invalid request: {loc}: {first['msg']}") from None

    def check_params(self, body: ChatBody, model: ModelInfo) -> bool:
        """Moonshot's parameter rules; returns whether thinking is on."""
        if body.thinking is not None and body.reasoning_effort is not None:
            raise ApiError(
                400, "invalid_request_error", "cannot specify both 'thinking' and 'reasoning_effort'"
            )
        thinking_type = (body.thinking or {}).get("type", "enabled")
        if thinking_type not in ("enabled", "disabled"):
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid request: thinking.type must be 'enabled' or 'disabled', not {thinking_type!r}",
            )
        thinking = model.thinking_switch and thinking_type == "enabled"
        if model.reasoning_effort is not None:  # kimi-k3: reasoning_effort, default max (docs/KIMI.md)
            effort = body.reasoning_effort or "max"
            if effort not in ("low", "high", "max"):
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"Invalid request: reasoning_effort must be 'low', 'high' or 'max', not {effort!r}",
                )
            thinking = effort != "low"
        if model.fixed_sampling:
            fixed = {"temperature": 1.0 if thinking else 0.6, **FIXED_VALUES}
            for name, value in fixed.items():
                sent = getattr(body, name)
                if sent is not None and abs(float(sent) - value) > 1e-9:
                    raise ApiError(
                        400,
                        "invalid_request_error",
                        f"invalid {name}: only {value:g} is allowed for this model",
                    )
        elif body.temperature is not None and not 0 <= body.temperature <= 1:
            raise ApiError(400, "invalid_request_error", "invalid temperature: must be in [0, 1]")
        if body.tools:
            problem = tool_schema_problem(body.tools)
            if problem:
                raise ApiError(400, "invalid_request_error", problem)
        if body.tool_choice == "required":
            raise ApiError(
                400, "invalid_request_error", "Invalid request: tool_choice 'required' is not supported"
            )
        if isinstance(body.tool_choice, dict) and thinking:
            raise ApiError(
                400, "invalid_request_error", "tool_choice specified is incompatible with thinking enabled"
            )
        if thinking:
            for i, msg in enumerate(body.messages):
                if (
                    isinstance(msg, dict)
                    and msg.get("role") == "assistant"
                    and msg.get("tool_calls")
                    and not msg.get("reasoning_content")
                ):
                    raise ApiError(
                        400,
                        "invalid_request_error",
                        f"thinking is enabled but reasoning_content is missing in assistant tool "
                        f"call message at index {i}",
                    )
        fmt = (body.response_format or {}).get("type", "text")
        if fmt not in ("text", "json_object", "json_schema"):
            raise ApiError(
                400, "invalid_request_error", f"Invalid request: unknown response_format type {fmt!r}"
            )
        return thinking

    def check_prompt(self, model: ModelInfo, prompt: Prompt, max_tokens: int | None) -> int:
        """Image support and the window (prompt + max_tokens); returns the output budget."""
        if prompt.image_count and not model.images:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid request: the model {model.id} does not support image input",
            )
        requested = prompt.prompt_tokens + (max_tokens or 0)
        if requested > model.window:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Your request exceeded model token limit: {model.window} (requested: {requested})",
            )
        return (
            max_tokens
            if max_tokens is not None
            else min(model.max_output, model.window - prompt.prompt_tokens)
        )

    def tokenize(self, body: ChatBody | dict[str, Any], cfg: EmulatorConfig) -> Prompt:
        messages = body.messages if isinstance(body, ChatBody) else body.get("messages")
        tools = body.tools if isinstance(body, ChatBody) else body.get("tools")
        return parse_prompt(
            messages,  # type: ignore[arg-type]
            tools,
            token_ratio=cfg.token_ratio,
            image_tokens=cfg.image_tokens,
            message_overhead=cfg.message_overhead,
        )

    def _ttl(self) -> float | None:
        ttl = self.config.cache_ttl_s
        return None if ttl is None else ttl * self.config.time_scale

    def _latency_s(self, completion_tokens: int) -> float:
        cfg = self.config
        return (cfg.latency_ms + cfg.latency_per_token_ms * completion_tokens) / 1000

    # --- composing the answer -------------------------------------------------------------------------------

    def compose(
        self, body: ChatBody, prompt: Prompt, thinking: bool, budget: int, fault: str | None
    ) -> Result:
        """The answer text, reasoning and tool call, sized to `budget`, with the fault applied."""
        user_text = prompt.user_text()
        reasoning_on = thinking and self.config.reasoning != "off"
        content_budget = max(budget - (THINKING_RESERVE if reasoning_on else 0), 0)
        last = body.messages[-1] if body.messages and isinstance(body.messages[-1], dict) else {}
        tool_call: dict[str, Any] | None = None
        wants_tool = body.tools and body.tool_choice != "none" and last.get("role") != "tool"
        fmt = body.response_format or {}
        in_prose = False
        if wants_tool:
            tool = body.tools[0]  # type: ignore[index]
            if isinstance(body.tool_choice, dict):
                name = (body.tool_choice.get("function") or {}).get("name")
                tool = next((t for t in body.tools if (t.get("function") or {}).get("name") == name), tool)  # type: ignore[union-attr]
            answer, tool_call = answers.tool_call_answer(tool, user_text)
        elif fmt.get("type") in ("json_object", "json_schema"):
            schema = (
                (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
            )
            last_user = next((m.text for m in reversed(prompt.messages) if m.role == "user"), "")
            answer = answers.json_answer(user_text, prompt.system_text(), schema, content_budget, last_user)
        elif body.model in (self.config.extra_models or {}) and "json" in prompt.system_text().lower():
            # A foreign model without JSON mode follows the prompt the way small models do: JSON in prose.
            last_user = next((m.text for m in reversed(prompt.messages) if m.role == "user"), "")
            answer = answers.json_answer(user_text, prompt.system_text(), None, content_budget, last_user)
            in_prose = True
        else:
            last_user = next((m.text for m in reversed(prompt.messages) if m.role == "user"), "")
            answer = answers.text_answer(user_text, last_user)
        content = answer.content
        if in_prose:
            content = f"Here is the JSON you asked for:\n```json\n{content}\n```\nHope this helps!"
        if last.get("role") == "assistant" and last.get("partial") and isinstance(last.get("content"), str):
            prefix = last["content"]
            content = content[len(prefix) :] if content.startswith(prefix) else content
        reasoning = answers.reasoning_for(answer) if reasoning_on else ""
        finish = "tool_calls" if tool_call else "stop"
        reasoning_tokens = tokens.count(reasoning)
        if reasoning_tokens > budget:
            reasoning, content = _cut(reasoning, budget), ""
            finish = "length"
        elif tokens.count(content) > budget - reasoning_tokens:
            content, finish = _cut(content, budget - reasoning_tokens), "length"
        if fault == "length" and content:
            content, finish = _cut(content, max(tokens.count(content) // 2, 1)), "length"
        if fault == "invalid_json" and content:
            content = _break_json(content)
        out_tokens = reasoning_tokens + tokens.count(content)
        if tool_call:
            out_tokens += tokens.count(tool_call["function"]["name"] + tool_call["function"]["arguments"])
        return Result(answer, content, reasoning, tool_call, finish, out_tokens)

    # --- responses ------------------------------------------------------------------------------------------

    def usage(self, turn: Turn, result: Result, cached: int) -> dict[str, Any]:
        prompt_tokens = turn.prompt.prompt_tokens if turn.prompt else 0
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": prompt_tokens + result.completion_tokens,
        }
        shape = self.config.usage_shape
        if shape in ("both", "moonshot"):
            usage["cached_tokens"] = cached
        if shape in ("both", "openai"):
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage

    def completion_body(self, turn: Turn, result: Result, cached: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": result.content}
        if result.reasoning:
            message["reasoning_content"] = result.reasoning
        if result.tool_call:
            message["tool_calls"] = [{k: v for k, v in result.tool_call.items() if k != "index"}]
        return {
            "id": turn.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": turn.model.id if turn.model else "",
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
        } | ({} if self.config.usage_shape == "none" else {"usage": self.usage(turn, result, cached)})

    def complete(self, turn: Turn, result: Result, cached: int) -> None:
        """A request that completed: its prefix enters the cache, its cost is spent, its entry is logged."""
        self.state.cache.insert(turn.chain, self.config.cache_max_blocks)
        turn.entry["completion_tokens"] = result.completion_tokens
        turn.entry["finish_reason"] = result.finish_reason
        if turn.model and turn.prompt:
            miss = turn.prompt.prompt_tokens - cached
            m = turn.model
            usd = (
                miss * m.price_cache_miss
                + cached * m.price_cache_hit
                + result.completion_tokens * m.price_output
            ) / 1e6
            self.state.add_spend(usd)
        self.finish(turn, 200)

    def stream(self, turn: Turn, result: Result, cached: int, truncate: bool) -> StreamingResponse:
        options = (turn.body.stream_options if turn.body else None) or {}
        include_usage = bool(options.get("include_usage"))
        return StreamingResponse(
            self._events(turn, result, cached, truncate, include_usage),
            media_type="text/event-stream",
            headers={**self.headers(turn.request_id), "Cache-Control": "no-cache"},
        )

    async def _events(
        self, turn: Turn, result: Result, cached: int, truncate: bool, include_usage: bool
    ) -> AsyncIterator[str]:
        created = int(time.time())
        model = turn.model.id if turn.model else ""
        completed = False

        def chunk(
            delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
        ) -> str:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if usage is not None:
                choice["usage"] = usage
            payload = {
                "id": turn.request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
            return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"

        try:
            cfg = self.config
            await asyncio.sleep(cfg.latency_ms / 1000)
            yield chunk({"role": "assistant", "content": ""})
            deltas: list[dict[str, Any]] = [{"reasoning_content": p} for p in _pieces(result.reasoning)] + [
                {"content": p} for p in _pieces(result.content)
            ]
            if result.tool_call:
                deltas.extend({"tool_calls": [part]} for part in _tool_call_parts(result.tool_call, cfg))
            if truncate:
                deltas = deltas[: max(len(deltas) // 2, 1)]
            per_token_s = cfg.latency_per_token_ms / 1000
            total_chars = max(len(result.reasoning) + len(result.content), 1)
            for delta in deltas:
                text = delta.get("content") or delta.get("reasoning_content") or ""
                if per_token_s and text:
                    await asyncio.sleep(per_token_s * result.completion_tokens * len(text) / total_chars)
                yield chunk(delta)
            if truncate:
                self.finish(turn, 200, "stream_truncated")
                completed = True
                return
            usage = self.usage(turn, result, cached)
            shape = cfg.usage_shape
            yield chunk({}, result.finish_reason, usage if shape in ("both", "moonshot") else None)
            if include_usage and shape != "none":
                payload = {
                    "id": turn.request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
            yield "data: [DONE]\n\n"
            self.complete(turn, result, cached)
            completed = True
        finally:
            self.state.limits.release()
            if not completed:
                self.finish(turn, 499, "client_disconnected")

    async def drop(self, request: Request, turn: Turn) -> Response:
        """Close the connection without an answer (the fault `drop`)."""
        transport = request.scope.get("emulator.transport")
        self.finish(turn, 0, "connection_dropped")
        if transport is not None:
            transport.abort()
            await asyncio.sleep(0.02)
            return Response(status_code=500)
        raise ConnectionAbortedError("emulator fault: drop")  # uvicorn closes the connection after a 500

    async def stall(self, request: Request) -> bool:
        """Sleep `timeout_sleep_s`; True when the client went away meanwhile."""
        deadline = time.monotonic() + self.config.timeout_sleep_s
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return False

    # --- other /v1 endpoints --------------------------------------------------------------------------------

    async def simple(self, request: Request, handler: Any) -> Response:
        """Auth, logging and error envelope around a small endpoint."""
        turn = Turn(self.state.next_id("req"), {}, time.perf_counter())
        turn.entry = self.new_entry(request, turn.request_id)
        try:
            self.check_key(request)
            payload = await handler(request, turn)
        except ApiError as error:
            self.finish(turn, error.status, error.type)
            return self.error_response(error, turn.request_id)
        self.finish(turn, 200)
        if isinstance(payload, Response):  # raw bytes (file content)
            payload.headers.update(self.headers(turn.request_id))
            return payload
        return JSONResponse(payload, headers=self.headers(turn.request_id))

    async def estimate(self, request: Request, turn: Turn) -> dict[str, Any]:
        data = await self.read_json(request, turn)
        model_id = data.get("model")
        turn.entry["model"] = model_id if isinstance(model_id, str) else None
        if not isinstance(model_id, str):
            raise ApiError(400, "invalid_request_error", "Invalid request: model is required")
        model = self.model_of(model_id)
        try:
            prompt = await anyio.to_thread.run_sync(self.tokenize, data, self.config)
        except BadRequest as error:
            raise ApiError(400, "invalid_request_error", str(error)) from None
        if prompt.image_count and not model.images:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid request: the model {model.id} does not support image input",
            )
        turn.entry["prompt_tokens"] = prompt.prompt_tokens
        return {"data": {"total_tokens": prompt.prompt_tokens}}

    async def models(self, request: Request, turn: Turn) -> dict[str, Any]:
        data = [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": self.config.owned_by,
                "context_length": m.window,
                "supports_image_in": m.images,
            }
            for m in self.available().values()
        ]
        return {"object": "list", "data": data}

    async def balance(self, request: Request, turn: Turn) -> dict[str, Any]:
        left = round(self.config.balance_usd - self.state.spent_usd, 6)
        return {
            "code": 0,
            "data": {"available_balance": left, "voucher_balance": 0, "cash_balance": left},
            "scode": "0x0",
            "status": True,
        }

    async def not_found(self, request: Request) -> Response:
        body = {"code": 5, "error": "url.not_found", "message": "没找到对象", "scode": "0x5", "status": False}
        return JSONResponse(body, status_code=404)

    # --- control plane --------------------------------------------------------------------------------------

    async def control_config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object of knobs")
                self.state.configure(**changes)
            except (ValueError, ValidationError) as error:
                return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(self.config.model_dump(exclude={"api_key"}))  # keys stay out of outputs

    async def control_fail_next(self, request: Request) -> Response:
        try:
            data = await request.json()
            match = data.get("match")
            self.state.fail_next(
                str(data.get("kind")), int(data.get("count", 1)), None if match is None else str(match)
            )
        except (ValueError, TypeError, AttributeError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse({"queued": [{"kind": k, "match": m} for k, m in self.state.fail_queue]})

    async def control_requests(self, request: Request) -> Response:
        return JSONResponse(self.state.requests())

    async def control_reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"reset": True})

    async def control_stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())


def _tool_call_parts(call: dict[str, Any], cfg: EmulatorConfig) -> list[dict[str, Any]]:
    """The stream deltas of one tool call: whole, or split the way OpenAI streams it."""
    if cfg.tool_call_deltas == "one":
        return [call]
    arguments = call["function"]["arguments"]
    head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
    step = max(len(arguments) // 3, 1)
    pieces = [arguments[i : i + step] for i in range(0, len(arguments), step)] or [""]
    return [head] + [{"index": call.get("index", 0), "function": {"arguments": p}} for p in pieces]
