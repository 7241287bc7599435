"""The Kimi HTTP client: one pooled `httpx.Client`, shared by the pipeline's worker threads.

Each call goes: retry layer (`retry.py`) -> limiter slot (`limits.py`) -> one HTTP attempt -> parsed
`ChatResult` or a typed error (`errors.py`). The caller shapes the body with `policy.apply_policy` first.

Missing key: `KimiClient(base_url, None)` raises `MissingApiKey` at construction unless the base URL is
loopback (the emulator, which checks the key itself and answers 401). There is no silent fallback to the
emulator: the pipeline chooses it explicitly, and its output is marked as emulated.

The key lives only in the Authorization header of the pooled client: not in `repr`, not in errors (bodies
are redacted), not in logs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource

from kimidocs.core.records import Usage
from kimidocs.core.responses import (
    EMULATOR_HEADER,
    ChatResult,
    CutAttempt,
    ParsedAnswer,
    ServerInfo,
    StreamAccumulator,
    parse_completion,
)
from kimidocs.kimi.errors import (
    KimiError,
    MissingApiKey,
    ModelNotFound,
    RateLimited,
    RequestNotSendable,
    StreamInterrupted,
    TransportError,
    UnexpectedResponse,
    error_from_response,
    redact,
)
from kimidocs.kimi.keys import InvalidKeyFormat, clean_api_key
from kimidocs.kimi.limits import Limiter, Permit
from kimidocs.kimi.retry import OnRetry, RetryPolicy, call_with_retries

__all__ = ["KimiClient", "is_loopback", "rough_prompt_tokens"]

log = logging.getLogger("kimidocs.kimi")

USER_AGENT = "kimidocs/0.1"
#: httpx errors raised before anything was sent, by a request that could never be sent as built.
_NOT_SENDABLE = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
CHARS_PER_TOKEN_FALLBACK = 3  # deliberately pessimistic: English runs ~4 chars/token
IMAGE_TOKENS_FALLBACK = 1_000


def is_loopback(base_url: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the local emulator, never the real service."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rough_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A crude, pessimistic prompt size for the limiter when the caller gave no estimate."""
    chars, images = 0, 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                images += 1
            elif isinstance(part, dict):
                chars += len(str(part.get("text") or ""))
    return chars // CHARS_PER_TOKEN_FALLBACK + images * IMAGE_TOKENS_FALLBACK + 4 * len(messages)


class KimiClient:
    """Calls Kimi's OpenAI-compatible API. Thread-safe: share one instance (and its connection pool).

    Args:
        base_url: e.g. "https://api.moonshot.ai/v1" or the emulator's "http://127.0.0.1:PORT/v1".
        api_key: the secret; None is allowed only for loopback URLs.
        timeout_s: read/write timeout per attempt (between SSE chunks when streaming).
        max_retries: retries after the first attempt (ignored when `retry_policy` is given).
        limiter: account limits to respect; None sends without client-side limiting.
        transport: an httpx transport (tests: `httpx.MockTransport`).
        on_retry: called `(attempt, error, wait_s)` before each backoff sleep.
        retry_policy: backoff parameters and the sleep function (tests make it instant).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 300.0,
        max_retries: int = 6,
        limiter: Limiter | None = None,
        transport: httpx.BaseTransport | None = None,
        on_retry: OnRetry | None = None,
        retry_policy: RetryPolicy | None = None,
        max_connections: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            api_key = clean_api_key(api_key)
        except InvalidKeyFormat as error:
            raise RequestNotSendable(str(error)) from None
        if not api_key and not is_loopback(self.base_url):
            raise MissingApiKey(self.base_url)
        self._key = api_key
        self.limiter = limiter
        self.on_retry = on_retry
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> KimiClient:
        """Build from `run.settings.Settings` (key, base URL, timeout, retries); `kw` adds the rest."""
        kw.setdefault("timeout_s", settings.request_timeout_s)
        kw.setdefault("max_retries", settings.max_retries)
        return cls(settings.kimi_base_url, settings.api_key_value(), **kw)

    def __repr__(self) -> str:
        return f"KimiClient(base_url={self.base_url!r}, api_key={'<set>' if self._key else None})"

    def __enter__(self) -> KimiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- public API ------------------------------------------------------------------------------------

    def chat(
        self, body: dict[str, Any], *, stream: bool = False, tokens_est: int | None = None
    ) -> ChatResult:
        """POST /chat/completions with retries and limits; streamed (SSE) when `stream`.

        `body` should already be shaped by `policy.apply_policy`. `tokens_est` is what Moonshot's TPM will
        charge: the prompt estimate + `max_tokens`. When None, a rough count of the messages + `max_tokens`.
        After the answer the limiter's charge is corrected to the billed `prompt_tokens + max_tokens`.
        """
        model = str(body.get("model") or "")
        if stream:
            # OpenAI-standard servers send usage in a stream only when asked; Moonshot accepts the flag too.
            payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        else:
            payload = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        max_tokens = int(body.get("max_tokens") or 0)
        if tokens_est is None:
            tokens_est = rough_prompt_tokens(body.get("messages") or []) + max_tokens
        send = self._stream_once if stream else self._post_chat_once

        cut: list[CutAttempt] = []

        def attempt(number: int) -> tuple[ParsedAnswer, int, float, float | None, str | None]:
            with self._slot(tokens_est) as permit:
                try:
                    outcome = send(payload, model)
                except StreamInterrupted as error:  # the server read the prompt: it bills this attempt
                    cut.append(CutAttempt(number, str(error), error.partial, error.usage))
                    raise
                usage = outcome[0].usage
                if permit is not None and usage is not None:
                    permit.settle(usage.prompt_tokens + max_tokens)
                return outcome

        try:
            (answer, status, latency_ms, ttft_ms, request_id), attempts = call_with_retries(
                attempt, self.retry_policy, on_retry=self.on_retry, describe=f"chat model={model}"
            )
        except KimiError as error:
            error.cut_attempts = tuple(cut)
            if isinstance(error, ModelNotFound):
                error.available = self._model_ids_or_empty()
            raise
        result = ChatResult(
            content=answer.content,
            reasoning_content=answer.reasoning_content,
            finish_reason=answer.finish_reason,
            usage=answer.usage or Usage(),
            tool_calls=answer.tool_calls,
            http_status=status,
            attempts=attempts,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            request_id=request_id,
            model=answer.model or model,
            usage_reported=answer.usage is not None,
            cut_attempts=tuple(cut),
        )
        log.debug(
            "chat model=%s status=%s attempts=%d prompt=%d cached=%d out=%d latency=%.0fms",
            result.model,
            status,
            attempts,
            result.usage.prompt_tokens,
            result.usage.cached_tokens,
            result.usage.completion_tokens,
            latency_ms,
        )
        return result

    def estimate_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        """Kimi's own prompt token count (POST /tokenizers/estimate-token-count -> data.total_tokens).

        Goes through the limiter with 0 tokens: whether it counts toward RPM is undocumented; assume it does.
        """
        endpoint = "POST /tokenizers/estimate-token-count"

        def attempt(_: int) -> int:
            with self._slot(0):
                data, _response = self._request_json(
                    "POST",
                    "/tokenizers/estimate-token-count",
                    endpoint,
                    model,
                    json={"model": model, "messages": messages},
                )
            total = (
                (data.get("data") or {}).get("total_tokens") if isinstance(data.get("data"), dict) else None
            )
            if not isinstance(total, int):
                raise UnexpectedResponse("no data.total_tokens in the answer", endpoint=endpoint)
            return total

        return call_with_retries(attempt, self.retry_policy, on_retry=self.on_retry, describe=endpoint)[0]

    def list_models(self) -> list[dict[str, Any]]:
        """The account's models (GET /models -> data[]); ids differ per account and change over time."""
        return self._models()[0]

    def probe(self) -> ServerInfo:
        """One `GET /models`: the model ids on offer and what kind of server answered (our emulator says
        so in a header), so rows are labelled from what answers rather than from the address."""
        models, emulator = self._models()
        return ServerInfo(
            model_ids=tuple(sorted(str(m["id"]) for m in models if m.get("id"))),
            owners=tuple(sorted({str(m.get("owned_by") or "") for m in models})),
            emulator=emulator,
            models=tuple(models),
        )

    # --- building blocks for other endpoints (batch.py) --------------------------------------------------

    def send_json(self, method: str, path: str, *, describe: str | None = None, **kw: Any) -> dict[str, Any]:
        """ONE attempt of a JSON endpoint (`path` relative to the base URL, e.g. "/batches"): a limiter
        slot of 0 tokens, typed errors with the key redacted. `kw` goes to httpx (json, files, data,
        params). Callers wrap it in `call_with_retries(..., self.retry_policy, on_retry=self.on_retry)`
        and decide themselves whether a non-idempotent request may be repeated."""
        endpoint = describe or f"{method} {path}"
        with self._slot(0):
            return self._request_json(method, path, endpoint, None, **kw)[0]

    def send_bytes(self, method: str, path: str, *, describe: str | None = None, **kw: Any) -> bytes:
        """ONE attempt of an endpoint that answers raw bytes (file content); errors as `send_json`."""
        endpoint = describe or f"{method} {path}"
        with self._slot(0):
            try:
                response = self._http.request(method, self._url(path), **kw)
            except httpx.HTTPError as error:
                raise self._transport_error(error, endpoint) from None
            if response.status_code >= 400:
                raise self._api_error(response, endpoint, None)
            return response.content

    def redact(self, text: str) -> str:
        """`text` with this client's key removed in every form (for messages built from answers)."""
        return redact(text, self._key)

    def _models(self) -> tuple[list[dict[str, Any]], bool]:
        endpoint = "GET /models"

        def attempt(_: int) -> tuple[list[dict[str, Any]], bool]:
            data, response = self._request_json("GET", "/models", endpoint, None)
            models = data.get("data")
            if not isinstance(models, list):
                raise UnexpectedResponse("no data[] in the answer", endpoint=endpoint)
            return [m for m in models if isinstance(m, dict)], EMULATOR_HEADER in response.headers

        return call_with_retries(attempt, self.retry_policy, on_retry=self.on_retry, describe=endpoint)[0]

    # --- one attempt -----------------------------------------------------------------------------------

    @contextmanager
    def _slot(self, tokens: int) -> Iterator[Permit | None]:
        """A limiter slot for one attempt; tells the limiter when the server rate-limited us anyway."""
        holder: AbstractContextManager[Permit | None] = (
            self.limiter.acquire(tokens) if self.limiter is not None else nullcontext(None)
        )
        try:
            with holder as permit:
                yield permit
        except RateLimited as error:
            if self.limiter is not None and error.status is not None:
                self.limiter.penalize(error.retry_after, error.kind)
            raise

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _transport_error(self, error: httpx.HTTPError, endpoint: str) -> KimiError:
        detail = redact(f"{type(error).__name__}: {error}", self._key)
        if isinstance(error, _NOT_SENDABLE):
            return RequestNotSendable(detail, endpoint=endpoint)
        return TransportError(detail, endpoint=endpoint)

    def _api_error(self, response: httpx.Response, endpoint: str, model: str | None) -> KimiError:
        return error_from_response(
            response.status_code,
            response.content,
            response.headers,
            secret=self._key,
            endpoint=endpoint,
            model=model,
        )

    def _request_json(
        self, method: str, path: str, endpoint: str, model: str | None, **kw: Any
    ) -> tuple[dict[str, Any], httpx.Response]:
        try:
            response = self._http.request(method, self._url(path), **kw)
        except httpx.HTTPError as error:
            raise self._transport_error(error, endpoint) from None
        if response.status_code >= 400:
            raise self._api_error(response, endpoint, model)
        try:
            data = response.json()
        except ValueError:
            raise UnexpectedResponse(
                f"HTTP {response.status_code} body is not JSON",
                endpoint=endpoint,
                status=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise UnexpectedResponse(
                "JSON body is not an object", endpoint=endpoint, status=response.status_code
            )
        if "error" in data and "choices" not in data and "data" not in data:
            raise self._api_error(response, endpoint, model)  # an error envelope sent with a 2xx status
        return data, response

    def _post_chat_once(
        self, payload: dict[str, Any], model: str
    ) -> tuple[ParsedAnswer, int, float, float | None, str | None]:
        started = time.perf_counter()
        data, response = self._request_json(
            "POST", "/chat/completions", "POST /chat/completions", model or None, json=payload
        )
        latency_ms = (time.perf_counter() - started) * 1000
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise UnexpectedResponse(
                "chat answer without choices", endpoint="POST /chat/completions", status=200
            )
        return parse_completion(data), response.status_code, latency_ms, None, _request_id(response)

    def _stream_once(
        self, payload: dict[str, Any], model: str
    ) -> tuple[ParsedAnswer, int, float, float | None, str | None]:
        acc = StreamAccumulator()
        try:
            return self._read_stream(payload, model, acc)
        except StreamInterrupted as cut:  # what arrived before the cut: the server bills it (issue 22.3)
            cut.partial = "".join(acc.content) + "".join(acc.reasoning)
            cut.usage = acc.usage
            raise

    def _read_stream(
        self, payload: dict[str, Any], model: str, acc: StreamAccumulator
    ) -> tuple[ParsedAnswer, int, float, float | None, str | None]:
        endpoint = "POST /chat/completions (stream)"
        started = time.perf_counter()
        ttft_ms: float | None = None
        try:
            with self._http.stream(
                "POST", self._url("/chat/completions"), json=payload, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._api_error(response, endpoint, model or None)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    response.read()  # the server chose not to stream: read it as one JSON answer
                    return self._answer_from_plain(response, endpoint, model, started)
                done = False
                for event in EventSource(response).iter_sse():
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = self._chunk(event.data, response, endpoint, model, acc)
                    if acc.add(chunk) and ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                if not done:
                    raise StreamInterrupted(
                        "the stream ended before data: [DONE]", endpoint=endpoint, received_chars=acc.chars
                    )
        except httpx.HTTPError as error:
            if isinstance(error, _NOT_SENDABLE):
                raise self._transport_error(error, endpoint) from None
            detail = redact(f"{type(error).__name__}: {error}", self._key)
            if (
                acc.chars
                or ttft_ms is not None
                or isinstance(error, httpx.RemoteProtocolError | httpx.ReadError)
            ):
                raise StreamInterrupted(detail, endpoint=endpoint, received_chars=acc.chars) from None
            raise TransportError(detail, endpoint=endpoint) from None
        latency_ms = (time.perf_counter() - started) * 1000
        return acc.answer(), response.status_code, latency_ms, ttft_ms, _request_id(response)

    def _chunk(
        self, data: str, response: httpx.Response, endpoint: str, model: str, acc: StreamAccumulator
    ) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamInterrupted(
                f"malformed SSE chunk: {redact(data[:200], self._key)!r}",
                endpoint=endpoint,
                received_chars=acc.chars,
            ) from None
        if not isinstance(chunk, dict):
            raise StreamInterrupted(
                "SSE chunk is not a JSON object", endpoint=endpoint, received_chars=acc.chars
            )
        if "error" in chunk and not chunk.get("choices"):
            raise error_from_response(
                response.status_code,
                data,
                response.headers,
                secret=self._key,
                endpoint=endpoint,
                model=model or None,
            )
        return chunk

    def _answer_from_plain(
        self, response: httpx.Response, endpoint: str, model: str, started: float
    ) -> tuple[ParsedAnswer, int, float, float | None, str | None]:
        try:
            data = response.json()
        except ValueError:
            raise UnexpectedResponse(
                "neither SSE nor JSON", endpoint=endpoint, status=response.status_code
            ) from None
        if not isinstance(data, dict):
            raise UnexpectedResponse(
                "JSON body is not an object", endpoint=endpoint, status=response.status_code
            )
        if "error" in data and not data.get("choices"):
            raise self._api_error(response, endpoint, model or None)  # an error envelope with a 2xx status
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise UnexpectedResponse(
                "chat answer without choices", endpoint=endpoint, status=response.status_code
            )
        latency_ms = (time.perf_counter() - started) * 1000
        return parse_completion(data), response.status_code, latency_ms, None, _request_id(response)

    def _model_ids_or_empty(self) -> tuple[str, ...]:
        """Best effort, for a helpful ModelNotFound message; never hides the original error."""
        try:
            data, _response = self._request_json("GET", "/models", "GET /models", None)
        except KimiError:
            return ()
        models = data.get("data") if isinstance(data.get("data"), list) else []
        return tuple(sorted(str(m.get("id")) for m in models if isinstance(m, dict) and m.get("id")))  # type: ignore[union-attr]


def _request_id(response: httpx.Response) -> str | None:
    headers = response.headers
    return headers.get("msh-request-id") or headers.get("x-request-id") or headers.get("x-trace-id")
