"""Kimi's Batch API as data: the protocol facts, and pure functions that build input files and read the
batch objects and result files the service returns. No I/O (the client is `kimidocs.kimi.batch`).

What the documentation says (read 2026; "Kimi docs" = platform.kimi.ai, mirrored on platform.kimi.com):

* Flow: upload a JSONL file with `POST /v1/files` (multipart, `purpose=batch`), then `POST /v1/batches`
  `{input_file_id, endpoint: "/v1/chat/completions", completion_window, metadata}`; poll
  `GET /v1/batches/{id}`; when done download `output_file_id` (and `error_file_id` "if any requests
  failed") with `GET /v1/files/{id}/content`. Also `GET /v1/batches?after=&limit=` (default 20, answers
  `{object: "list", data, has_more}`) and `POST /v1/batches/{id}/cancel` (only from validating,
  in_progress or finalizing; status goes cancelling -> cancelled; otherwise 400).
  https://platform.kimi.ai/docs/guide/use-batch-api, .../docs/api/batch-create, .../api/batch-list,
  .../api/batch-retrieve, .../api/batch-cancel (OpenAPI copy: github api-evangelist/moonshot-ai,
  openapi/moonshot-ai-batch-api-openapi.yml and moonshot-ai-files-api-openapi.yml).
* Input line: `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": <chat request>}`;
  custom_id unique within the file; every line the same model; the model must exist and be granted.
  File: `.jsonl`, non-empty, at most 100 MB; at most 1,000 batch-purpose files per organization.
  (batch-create "Limits" table; use-batch-api "Input file requirements".)
* `completion_window`: "formats like 12h, 1d, 3d, minimum 12h, maximum 7d" (batch-create schema); the
  examples use "24h". A task that does not finish inside its window expires (pricing/batch).
* `metadata`: at most 16 pairs, key <= 64 chars, value <= 512 chars (batch-create schema).
* Batch object: id, object "batch", endpoint, input_file_id, completion_window, status, created_at,
  request_counts {completed, failed, total}, output_file_id, error_file_id, in_progress_at, expires_at,
  finalizing_at, completed_at, failed_at ("validation failure timestamp"), cancelling_at, cancelled_at,
  metadata. Status: validating | failed (input validation failed) | in_progress | finalizing | completed |
  expired | cancelling | cancelled (batch-retrieve).
* Price: "Batch API inference costs are 60% of the standard model price"; "not subject to real-time
  concurrency limits" (https://platform.kimi.ai/docs/pricing/batch); "saving 40% on inference costs"
  (use-batch-api). Models: kimi-k2.5 (pricing/batch), "kimi-k2.6 and kimi-k2.5" (use-batch-api, later).
  Only for accounts at Tier1 or above (https://platform.kimi.ai/docs/guide/use-batch-inference).

Where the Kimi docs are silent we follow OpenAI's Batch API, which Kimi's mirrors field for field, and
take the conservative side:

* Result line (output and error files): `{"id", "custom_id", "response": {"status_code", "request_id",
  "body"}, "error": {"code", "message"} | null}` (OpenAI's BatchRequestOutput). Lines come in any order:
  key on custom_id. A request that got an error answer has `response.status_code` >= 400 and the error
  envelope as `body`; one that never ran (expired, cancelled) has `response: null` and `error` set.
* Input-file problems (bad JSON, missing fields, duplicate custom_id, wrong method/url, mixed or unknown
  model) fail the whole batch at validation (status `failed`), as the Kimi docs' "validating" step and
  `failed_at` describe; the reasons come in an OpenAI-style `errors: {data: [{code, message, line}]}`
  when the service sends them (Kimi's schema does not list the field). Problems of one request's body
  (a parameter the chat endpoint refuses, a prompt over the window) go to the error file for that line.
* Lines per file: not documented; we cap at OpenAI's 50,000.
* Cached tokens inside a batch: not documented. Estimates assume no prefix-cache hits in a batch; if a
  result reports cached tokens they are billed at the batch-discounted hit price (`costs.batch_call_cost`).
* Output/error files carry `purpose: "batch_output"` (OpenAI's; Kimi's enum lists only the input kinds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kimidocs.core.records import Usage
from kimidocs.core.responses import parse_completion

__all__ = [
    "BATCH_ENDPOINT",
    "CANCELLABLE",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_LINES",
    "STATUSES",
    "TERMINAL",
    "Batch",
    "BatchInputError",
    "BatchLineError",
    "BatchLineResult",
    "BatchOutputError",
    "RequestCounts",
    "check_metadata",
    "encode_lines",
    "input_line",
    "parse_batch",
    "parse_result_file",
    "parse_result_line",
    "parse_window",
    "split_lines",
]

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_METHOD = "POST"
MAX_FILE_BYTES = 100 * 1024 * 1024  # documented
MAX_FILES = 1_000  # batch-purpose files per organization, documented
MAX_LINES = 50_000  # undocumented for Kimi: OpenAI's limit
MIN_WINDOW_S = 12 * 3600
MAX_WINDOW_S = 7 * 24 * 3600
METADATA_MAX_PAIRS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512

STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})

_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([hd])\s*$")


class BatchInputError(ValueError):
    """Requests that cannot make a valid batch input file (limits, duplicates, mixed models, bad window)."""


class BatchOutputError(ValueError):
    """A result file or batch object we cannot read."""


# --- building input ------------------------------------------------------------------------------------


def parse_window(window: str) -> int:
    """Seconds of a completion window ("24h", "1d", "3d"); BatchInputError outside 12h..7d."""
    match = _WINDOW_RE.match(window) if isinstance(window, str) else None
    if not match:
        raise BatchInputError(f"completion_window {window!r}: expected a number of hours or days, e.g. 24h")
    seconds = int(match.group(1)) * (3600 if match.group(2) == "h" else 86_400)
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise BatchInputError(f"completion_window {window!r}: must be between 12h and 7d")
    return seconds


def check_metadata(metadata: Mapping[str, object] | None) -> dict[str, str]:
    """Metadata as the API takes it (<= 16 pairs, key <= 64 chars, value <= 512 chars, strings)."""
    if not metadata:
        return {}
    if len(metadata) > METADATA_MAX_PAIRS:
        raise BatchInputError(f"metadata has {len(metadata)} pairs; at most {METADATA_MAX_PAIRS}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        key, text = str(key), str(value)
        if not key or len(key) > METADATA_MAX_KEY or len(text) > METADATA_MAX_VALUE:
            raise BatchInputError(
                f"metadata {key[:70]!r}: keys 1..{METADATA_MAX_KEY} chars, values <= {METADATA_MAX_VALUE}"
            )
        out[key] = text
    return out


def input_line(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """One line of an input file: a chat completions request under our request key."""
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchInputError("custom_id must be a non-empty string")
    request = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise BatchInputError(f"request {custom_id!r} has no model")
    return {"custom_id": custom_id, "method": BATCH_METHOD, "url": BATCH_ENDPOINT, "body": request}


def _encoded(custom_id: str, body: Mapping[str, Any]) -> bytes:
    line = json.dumps(input_line(custom_id, body), ensure_ascii=False, separators=(",", ":"))
    return line.encode("utf-8") + b"\n"


def encode_lines(
    requests: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_FILE_BYTES,
) -> bytes:
    """The JSONL input file for `(custom_id, chat body)` pairs, checked against what validation refuses:
    empty file, duplicate custom_id, more than one model, too many lines or bytes."""
    seen: set[str] = set()
    models: set[str] = set()
    out: list[bytes] = []
    size = 0
    for custom_id, body in requests:
        if custom_id in seen:
            raise BatchInputError(f"duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        encoded = _encoded(custom_id, body)
        models.add(str(body.get("model")))
        if len(models) > 1:
            raise BatchInputError(f"one model per batch; got {', '.join(sorted(models))}")
        size += len(encoded)
        out.append(encoded)
        if len(out) > max_lines:
            raise BatchInputError(f"more than {max_lines} lines in one batch file")
        if size > max_bytes:
            raise BatchInputError(f"batch file over {max_bytes} bytes")
    if not out:
        raise BatchInputError("a batch needs at least one request")
    return b"".join(out)


def split_lines(
    requests: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_FILE_BYTES,
) -> Iterator[list[tuple[str, Mapping[str, Any]]]]:
    """Groups of requests (in order) that each fit one input file; one model per group.

    A new group starts when the line or byte limit would be passed or the model changes. A single
    request larger than `max_bytes` raises BatchInputError.
    """
    group: list[tuple[str, Mapping[str, Any]]] = []
    size, model = 0, None
    for custom_id, body in requests:
        n = len(_encoded(custom_id, body))
        if n > max_bytes:
            raise BatchInputError(f"request {custom_id!r} alone is {n} bytes, over the {max_bytes} limit")
        if group and (len(group) >= max_lines or size + n > max_bytes or body.get("model") != model):
            yield group
            group, size = [], 0
        group.append((custom_id, body))
        size, model = size + n, body.get("model")
    if group:
        yield group


# --- reading the batch object --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class BatchLineError:
    """Why validation failed the batch (OpenAI-style `errors.data[]`; `line` is 1-based when given)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch job as the service last described it. Timestamps are Unix seconds or None."""

    id: str
    status: str
    input_file_id: str
    endpoint: str = BATCH_ENDPOINT
    completion_window: str = ""
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    errors: tuple[BatchLineError, ...] = ()

    @property
    def terminal(self) -> bool:
        """No further change will come: completed, failed, expired or cancelled."""
        return self.status in TERMINAL

    @property
    def has_results(self) -> bool:
        """Whether result files may exist (a completed, expired or cancelled batch keeps what finished)."""
        return self.output_file_id is not None or self.error_file_id is not None

    def meta(self) -> dict[str, str]:
        return dict(self.metadata)


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_batch(data: Mapping[str, Any]) -> Batch:
    """A batch object (create, retrieve, cancel, list item) -> Batch; BatchOutputError if no id/status."""
    batch_id, status = data.get("id"), data.get("status")
    if not isinstance(batch_id, str) or not batch_id or status not in STATUSES:
        raise BatchOutputError(f"not a batch object (id={batch_id!r}, status={status!r})")
    raw_counts = data.get("request_counts")
    counts: dict[str, Any] = raw_counts if isinstance(raw_counts, dict) else {}
    raw_errors = data.get("errors")
    items = raw_errors.get("data") if isinstance(raw_errors, dict) else raw_errors
    errors = tuple(
        BatchLineError(
            code=str(e.get("code") or "error"),
            message=str(e.get("message") or ""),
            line=_opt_int(e.get("line")),
            param=_opt_str(e.get("param")),
        )
        for e in (items if isinstance(items, list) else [])
        if isinstance(e, dict)
    )
    raw_metadata = data.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    times = {
        name: _opt_int(data.get(name))
        for name in (
            "created_at",
            "in_progress_at",
            "expires_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        )
    }
    return Batch(
        id=batch_id,
        status=str(status),
        input_file_id=str(data.get("input_file_id") or ""),
        endpoint=str(data.get("endpoint") or BATCH_ENDPOINT),
        completion_window=str(data.get("completion_window") or ""),
        request_counts=RequestCounts(
            total=_opt_int(counts.get("total")) or 0,
            completed=_opt_int(counts.get("completed")) or 0,
            failed=_opt_int(counts.get("failed")) or 0,
        ),
        output_file_id=_opt_str(data.get("output_file_id")),
        error_file_id=_opt_str(data.get("error_file_id")),
        metadata=tuple(sorted((str(k), str(v)) for k, v in metadata.items())),
        errors=errors,
        **times,
    )


# --- reading result files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchLineResult:
    """What happened to one request of a batch.

    `ok`: HTTP 200 with a chat completion; then `content`, `finish_reason`, `usage` come from `body`
    exactly as a real-time call's would. Otherwise `error_type` / `error_message` say why: the error
    envelope of a request that was answered with an error (`status_code` >= 400), or the line's `error`
    for one that never ran (`status_code` None; e.g. `batch_expired`, `batch_cancelled`).
    """

    custom_id: str
    status_code: int | None
    request_id: str | None = None
    body: Mapping[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    content: str = ""
    reasoning_content: str = ""
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    usage: Usage = field(default_factory=Usage)
    usage_reported: bool = False
    model: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.body is not None and self.error_type is None


def parse_result_line(obj: Mapping[str, Any]) -> BatchLineResult:
    """One line of an output or error file; BatchOutputError when it has no custom_id."""
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchOutputError("result line without custom_id")
    response = obj.get("response") if isinstance(obj.get("response"), dict) else None
    error = obj.get("error") if isinstance(obj.get("error"), dict) else None
    status = _opt_int(response.get("status_code")) if response else None
    request_id = _opt_str(response.get("request_id")) if response else None
    body = response.get("body") if response and isinstance(response.get("body"), dict) else None
    if error is not None:
        return BatchLineResult(
            custom_id,
            status,
            request_id,
            body,
            error_type=str(error.get("code") or error.get("type") or "error"),
            error_message=str(error.get("message") or ""),
        )
    if body is None:
        return BatchLineResult(
            custom_id, status, request_id, None, error_type="no_response", error_message="no response body"
        )
    if status != 200 or ("error" in body and not body.get("choices")):
        envelope = body.get("error") if isinstance(body.get("error"), dict) else {}
        return BatchLineResult(
            custom_id,
            status,
            request_id,
            body,
            error_type=str(envelope.get("type") or envelope.get("code") or f"http_{status}"),
            error_message=str(envelope.get("message") or ""),
        )
    if not isinstance(body.get("choices"), list) or not body["choices"]:
        return BatchLineResult(
            custom_id,
            status,
            request_id,
            body,
            error_type="no_choices",
            error_message="answer without choices",
        )
    answer = parse_completion(dict(body))
    return BatchLineResult(
        custom_id,
        status,
        request_id,
        body,
        content=answer.content,
        reasoning_content=answer.reasoning_content,
        finish_reason=answer.finish_reason,
        tool_calls=answer.tool_calls,
        usage=answer.usage or Usage(),
        usage_reported=answer.usage is not None,
        model=answer.model,
    )


def parse_result_file(data: bytes | str) -> dict[str, BatchLineResult]:
    """Every line of an output or error file by custom_id (blank lines skipped; order does not matter)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    results: dict[str, BatchLineResult] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise BatchOutputError(f"result line {number} is not JSON") from None
        if not isinstance(obj, dict):
            raise BatchOutputError(f"result line {number} is not a JSON object")
        result = parse_result_line(obj)
        results[result.custom_id] = result
    return results
