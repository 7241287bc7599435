"""Every error the Kimi client raises, and how an HTTP answer becomes one of them.

The tree (branch on the class, never on the status: three different meanings share 429)::

    KimiError                              retryable fatal_for_run
    ├── APIError(status, type, message, request_id, retry_after)    the service said no
    │   ├── RateLimited(kind, current, limit)  yes(1)  tpd only  429 rate_limit_reached_error
    │   ├── EngineOverloaded                   yes     no        429 engine_overloaded_error
    │   ├── QuotaExceeded                      no      YES       429/403 exceeded_current_quota_error
    │   ├── AuthenticationError                no      YES       401 invalid_authentication_error,
    │   │                                                            incorrect_api_key_error
    │   ├── PermissionDenied                   no      YES       403 permission_denied_error
    │   ├── NotFound                           no      no        404
    │   │   ├── ModelNotFound(available)       no      no        404 resource_not_found_error (retired?)
    │   │   └── EndpointNotFound               no      YES       404 gateway url.not_found (bad base URL)
    │   ├── InvalidRequest                     no      no        400 invalid_request_error, other 4xx
    │   │   └── ContextLengthExceeded(window, requested)         "...token limit: W (requested: R)"
    │   ├── ContentFiltered                    no      no        400 content_filter
    │   └── ServerError                        yes(2)  no        5xx
    ├── TransportError                         yes     no        timeouts, refused/reset connections
    ├── StreamInterrupted                      yes     no        SSE ended before `data: [DONE]`
    ├── UnexpectedResponse                     no      no        a 2xx answer we cannot read
    ├── LimitUnreachable                       no      no        one request > the TPM or TPD limit
    ├── BatchWaitTimeout(batch_id, status)     no      no        a batch still running when wait() gave up
    ├── RequestNotSendable                     no      YES       httpx refused to build it (bad header, URL)
    └── MissingApiKey                          no      YES       no key for a non-loopback base URL

    (1) not when the wait is longer than the retry policy's `max_wait_s` (a spent TPD budget): then it is
        raised at once with `retry_after` set, and it stops the run when `kind == "tpd"`.
    (2) only 500, 502, 503, 504.

`status is None` on an `APIError` means the condition was detected locally before sending (the policy's
window check raises `ContextLengthExceeded`, the limiter raises `RateLimited` for a wait too long to sleep).

Secrets: the API key never appears in a message. Everything echoed from a response body goes through
`redact(text, secret)` before it is stored on an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from kimidocs.core.records import Usage
from kimidocs.core.responses import CutAttempt
from kimidocs.kimi.keys import CHINA_BASE_URL, INTERNATIONAL_BASE_URL, key_forms, key_pattern

__all__ = [
    "RETRYABLE_ERRORS",
    "RETRYABLE_STATUSES",
    "APIError",
    "AuthenticationError",
    "BatchWaitTimeout",
    "ContentFiltered",
    "ContextLengthExceeded",
    "EndpointNotFound",
    "EngineOverloaded",
    "InvalidRequest",
    "KimiError",
    "LimitUnreachable",
    "MissingApiKey",
    "ModelNotFound",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "RequestNotSendable",
    "ServerError",
    "StreamInterrupted",
    "TransportError",
    "UnexpectedResponse",
    "error_from_response",
    "parse_retry_after",
    "redact",
]

REDACTED = "[REDACTED]"
_MAX_BODY_CHARS = 2_000
# What a person needs of a server's error text in a log line, `calls.error` or `failures.message`: the
# reason, not a page of HTML or a stack trace (issue 22.1). The body itself stays on the exception.
_MAX_MESSAGE_CHARS = 400


def _shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with the number left out said."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}… ({len(flat) - limit} more characters)"


def redact(text: str, secret: str | None) -> str:
    """`text` with the key replaced in every form it can take (raw, stripped, escaped, as a header
    value; see `keys.key_forms`) and every form a server could turn it into that a reader could undo
    (case, percent-encoding, character escapes, hex, base64; `keys.key_pattern`), so an echoed key never
    reaches a log, an error or the database."""
    if not secret or not text:
        return text
    for form in key_forms(secret):
        text = text.replace(form, REDACTED)
    pattern = key_pattern(secret)
    return pattern.sub(REDACTED, text) if pattern is not None else text


class KimiError(Exception):
    """Root of every error raised by `kimidocs.kimi`.

    `attempts` is set by the retry layer on the error it finally raises (1 when it was not retried).
    """

    fatal_for_run: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = 1
        # earlier attempts of the same call cut mid-stream (set by the client): billed, logged by the caller
        self.cut_attempts: tuple[CutAttempt, ...] = ()

    @property
    def retryable(self) -> bool:
        """Whether another attempt of the same request can succeed (the one list: RETRYABLE_ERRORS)."""
        return isinstance(self, RETRYABLE_ERRORS)

    @property
    def retry_after_s(self) -> float | None:
        """Seconds the service asked us to wait, when it said so."""
        return None


class MissingApiKey(KimiError):
    """No API key, and the base URL is a real service (loopback URLs, i.e. the emulator, need none)."""

    fatal_for_run = True

    def __init__(self, base_url: str, env_var: str = "KIMI_API_KEY") -> None:
        super().__init__(
            f"No Kimi API key found for {base_url} - set the {env_var} environment variable "
            f"(or add {env_var}=sk-... to .env), or point --base-url at the local emulator "
            "(`kimidocs emulator`) for a run without the real service."
        )
        self.base_url = base_url
        self.env_var = env_var


class TransportError(KimiError):
    """The request did not get an HTTP answer: timeout, refused or reset connection."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(f"{endpoint}: {message}" if endpoint else message)
        self.endpoint = endpoint


class RequestNotSendable(KimiError):
    """The request could not be sent as built: an illegal header value (a key with a line break), an
    unsupported URL scheme. Every request shares the cause, so it is never retried and stops the run."""

    fatal_for_run = True

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(f"{endpoint}: {message}" if endpoint else message)
        self.endpoint = endpoint


class StreamInterrupted(KimiError):
    """A streamed answer stopped before `data: [DONE]`; never returned as a short result. `partial` is
    what arrived before the cut and `usage` the server's count if a chunk carried one: the server bills
    the attempt, so the caller logs it (issue 22.3)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        received_chars: int = 0,
        partial: str = "",
        usage: Usage | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {message}" if endpoint else message)
        self.endpoint = endpoint
        self.received_chars = received_chars
        self.partial = partial
        self.usage = usage


class UnexpectedResponse(KimiError):
    """A 2xx answer that is not what the API documents (not JSON, missing fields): a bug on one side."""

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{endpoint}: {message}" if endpoint else message)
        self.endpoint = endpoint
        self.status = status


class LimitUnreachable(KimiError):
    """One request asks more tokens than the account's TPM or TPD allows at all: split the work."""

    def __init__(self, tokens: int, limit_name: str, limit: int) -> None:
        super().__init__(
            f"request needs {tokens} tokens but {limit_name} is {limit}: it can never be admitted"
        )
        self.tokens = tokens
        self.limit_name = limit_name
        self.limit = limit


class BatchWaitTimeout(KimiError):
    """`BatchClient.wait` polled until its timeout and the batch is still not finished. The batch keeps
    running on the server: wait for the same id again later (it is not lost, and not retried here)."""

    def __init__(self, batch_id: str, status: str, waited_s: float, polls: int) -> None:
        super().__init__(
            f"batch {batch_id} is still {status} after {waited_s:.1f}s ({polls} polls); it keeps running "
            "on the server: wait for the same batch id again to collect it"
        )
        self.batch_id = batch_id
        self.status = status
        self.waited_s = waited_s
        self.polls = polls


class APIError(KimiError):
    """The service answered with an error. `type` is Moonshot's `error.type` (or the gateway code)."""

    def __init__(
        self,
        *,
        status: int | None,
        type: str | None,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        body: str | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after
        self.endpoint = endpoint
        self.model = model
        self.body = body
        super().__init__(message)

    @property
    def retry_after_s(self) -> float | None:
        return self.retry_after

    def __str__(self) -> str:
        where = " ".join(x for x in (self.endpoint, f"model={self.model}" if self.model else None) if x)
        head = f"{self.status if self.status is not None else 'local'} {self.type or 'error'}"
        text = f"{head}: {self.message}"
        if where:
            text = f"{where}: {text}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, type={self.type!r}, message={self.message!r})"


class RateLimited(APIError):
    """429 rate_limit_reached_error. `kind`: concurrency | rpm | tpm | tpd | unknown, parsed from the text."""

    def __init__(
        self, *, kind: str = "unknown", current: int | None = None, limit: int | None = None, **kw: Any
    ):
        super().__init__(**kw)
        self.kind = kind
        self.current = current
        self.limit = limit

    @property
    def retryable(self) -> bool:
        # A spent daily budget with no announced reset is not worth spinning on.
        return not (self.kind == "tpd" and self.retry_after is None)

    @property
    def fatal_for_run(self) -> bool:  # type: ignore[override]
        return self.kind == "tpd"


class EngineOverloaded(APIError):
    """429 engine_overloaded_error: the service is busy, not our account; back off and retry."""


class QuotaExceeded(APIError):
    """exceeded_current_quota_error (429 or 403): balance or quota gone. Top up; retrying cannot help."""

    fatal_for_run = True


class AuthenticationError(APIError):
    """401: the key is wrong, revoked, or from the other region (.cn keys fail on .ai and vice versa)."""

    fatal_for_run = True

    def __str__(self) -> str:
        return (
            f"{super().__str__()}. Keys are region-bound: a key from the international console works only "
            f"with KIMI_BASE_URL={INTERNATIONAL_BASE_URL}, one from the China console only with "
            f"{CHINA_BASE_URL}; check the key and that KIMI_BASE_URL matches its region"
        )


class PermissionDenied(APIError):
    """403 permission_denied_error: this API is not open to the account."""

    fatal_for_run = True


class NotFound(APIError):
    """404."""


class ModelNotFound(NotFound):
    """404 for a model id: unknown, not granted to this account, or retired. `available`: the account's."""

    def __init__(self, *, available: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.available = available

    def __str__(self) -> str:
        text = super().__str__()
        if self.available:
            text += f"; models on this account: {', '.join(self.available)}"
        return text


class EndpointNotFound(NotFound):
    """404 from the gateway (`url.not_found`): the base URL is wrong, so every call will fail."""

    fatal_for_run = True


class InvalidRequest(APIError):
    """400 invalid_request_error (and other 4xx): the request itself must change."""


class ContextLengthExceeded(InvalidRequest):
    """Prompt + max_tokens exceed the model's window. `window` and `requested` are parsed when given."""

    def __init__(self, *, window: int | None = None, requested: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.window = window
        self.requested = requested


class ContentFiltered(APIError):
    """400 content_filter: the input was judged high risk. Retrying the same text cannot help."""


class ServerError(APIError):
    """5xx. Only the statuses in RETRYABLE_STATUSES are retried."""

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


#: The one written-down list of what is worth another attempt. Everything else is final.
RETRYABLE_ERRORS: tuple[type[KimiError], ...] = (
    RateLimited,
    EngineOverloaded,
    ServerError,
    TransportError,
    StreamInterrupted,
)
#: ServerError statuses worth another attempt (501, 505... are not).
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})

# --- classification -------------------------------------------------------------------------------------

_TYPE_TO_CLASS: dict[str, type[APIError]] = {
    "rate_limit_reached_error": RateLimited,
    "engine_overloaded_error": EngineOverloaded,
    "exceeded_current_quota_error": QuotaExceeded,
    "invalid_authentication_error": AuthenticationError,
    "incorrect_api_key_error": AuthenticationError,
    "permission_denied_error": PermissionDenied,
    "resource_not_found_error": ModelNotFound,
    "content_filter": ContentFiltered,
    "invalid_request_error": InvalidRequest,
    "server_error": ServerError,
    "unexpected_output": ServerError,
    "url.not_found": EndpointNotFound,
}

_CONTEXT_RE = re.compile(r"token limit:?\s*(\d+)\s*\(requested:?\s*(\d+)\)", re.IGNORECASE)
_CONTEXT_WORDS = ("exceeded model token limit", "token length too long", "context length")
_TRY_AGAIN_RE = re.compile(r"try again (?:after|in)\s*(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)
_CURRENT_LIMIT_RE = re.compile(r"current:\s*(\d+),\s*limit:\s*(\d+)", re.IGNORECASE)
_MAX_N_RE = re.compile(r"max (?:concurrency|rpm|tpm|tpd):\s*(\d+)", re.IGNORECASE)
_QUOTA_WORDS = ("quota", "suspended", "not active", "balance")


def parse_retry_after(
    headers: Mapping[str, str], message: str = "", *, now: datetime | None = None
) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or HTTP date), else "try again after N seconds" in the text."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
    match = _TRY_AGAIN_RE.search(message)
    return float(match.group(1)) if match else None


def rate_limit_kind(message: str) -> str:
    """concurrency | rpm | tpm | tpd | unknown, from Moonshot's 429 text."""
    lowered = message.lower()
    for kind in ("concurrency", "rpm", "tpm", "tpd"):
        if re.search(rf"\b{kind}\b", lowered):
            return kind
    return "unknown"


def _body_fields(raw: str) -> tuple[str | None, str | None]:
    """(type, message) from `{"error": {"type", "message"}}`, the gateway envelope, or plain text."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, raw.strip()[:_MAX_BODY_CHARS] or None
    err = data.get("error")
    if isinstance(err, dict):
        return _str_or_none(err.get("type") or err.get("code")), _str_or_none(err.get("message"))
    if isinstance(err, str):  # gateway envelope: {"code": 5, "error": "url.not_found", "message": ...}
        return err, _str_or_none(data.get("message"))
    return _str_or_none(data.get("type")), _str_or_none(data.get("message"))


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _class_for(status: int, type_: str | None, message: str) -> type[APIError]:
    """`error.type` decides; the status only when the type is missing or unknown."""
    if type_ in _TYPE_TO_CLASS:
        cls = _TYPE_TO_CLASS[type_]
        if cls is ModelNotFound and "model" not in message.lower():
            return NotFound  # the same type names a missing batch or file
        return ContextLengthExceeded if cls is InvalidRequest and _is_context(message) else cls
    about_quota = any(w in message.lower() for w in _QUOTA_WORDS)
    if status == 401:
        return AuthenticationError
    if status == 403:
        return QuotaExceeded if about_quota else PermissionDenied
    if status == 404:
        return ModelNotFound if "model" in message.lower() else NotFound
    if status == 429:
        return QuotaExceeded if about_quota else RateLimited
    if status >= 500:
        return ServerError
    return ContextLengthExceeded if _is_context(message) else InvalidRequest


def _is_context(message: str) -> bool:
    lowered = message.lower()
    return bool(_CONTEXT_RE.search(message)) or any(w in lowered for w in _CONTEXT_WORDS)


def error_from_response(
    status: int,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    secret: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
) -> APIError:
    """Classify an error answer by `error.type` first, status second. Never raises; the key is redacted."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    raw = redact(raw, secret)
    type_, message = _body_fields(raw)
    message = _shorten(redact(message or f"HTTP {status} with no error message", secret))
    cls = _class_for(status, type_, message)
    kw: dict[str, Any] = {
        "status": status,
        "type": type_,
        "message": message,
        "request_id": headers.get("msh-request-id")
        or headers.get("x-request-id")
        or headers.get("x-trace-id"),
        "retry_after": parse_retry_after(headers, message),
        "endpoint": endpoint,
        "model": model,
        "body": raw[:_MAX_BODY_CHARS],
    }
    if cls is RateLimited:
        current_limit = _CURRENT_LIMIT_RE.search(message)
        max_n = _MAX_N_RE.search(message)
        kw["kind"] = rate_limit_kind(message)
        kw["current"] = int(current_limit.group(1)) if current_limit else None
        kw["limit"] = (
            int(current_limit.group(2)) if current_limit else (int(max_n.group(1)) if max_n else None)
        )
    elif cls is ContextLengthExceeded:
        match = _CONTEXT_RE.search(message)
        kw["window"] = int(match.group(1)) if match else None
        kw["requested"] = int(match.group(2)) if match else None
    return cls(**kw)
