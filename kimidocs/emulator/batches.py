"""The emulator's Batch API: files with purpose=batch, batch jobs processed in a background thread.

    POST   /v1/files                  multipart `file` + `purpose=batch` -> file object
    GET    /v1/files                  {"object": "list", "data": [file objects]}
    GET    /v1/files/{id}             file object;  DELETE -> {"id", "object": "file", "deleted": true}
    GET    /v1/files/{id}/content     the raw JSONL (input, output or error file)
    POST   /v1/batches                {input_file_id, endpoint, completion_window, metadata} -> batch
    GET    /v1/batches?after=&limit=  {"object": "list", "data": [...newest first], "has_more"}
    GET    /v1/batches/{id}           batch object
    POST   /v1/batches/{id}/cancel    validating | in_progress | finalizing -> cancelling -> cancelled

What Kimi documents, and where it is silent, is written down in `kimidocs.core.batching` with its sources
(https://platform.kimi.ai/docs/guide/use-batch-api, .../docs/api/batch-create, .../api/batch-retrieve,
.../api/batch-cancel, .../docs/pricing/batch, .../docs/guide/use-batch-inference; OpenAI's batch reference
where Kimi is silent). The emulator follows it:

* Upload: only purpose=batch is stored (the emulator has no file extraction). `.jsonl` name, non-empty,
  at most `batch_max_file_bytes` (100 MB) and `batch_max_lines` (50,000: OpenAI's number, Kimi's is
  undocumented), at most `batch_max_files` (1,000) batch files; Kimi's file error messages.
* Create: 403 permission_denied_error "The API you are accessing is not open" when `batch_api` is off or
  the tier is tier0 (batches are for Tier1+; the exact error is undocumented, this is Kimi's documented
  403 text). 400 for a bad endpoint, window (12h..7d), metadata or a non-batch file; 404 for an unknown
  file. The batch starts `validating`.
* Validation (after `batch_validate_s`): problems of the file fail the whole batch (status `failed`,
  `failed_at`, OpenAI-style `errors.data[{code, message, line, param}]`): a line that is not a JSON
  object, missing custom_id/method/url/body, duplicate custom_id, method other than POST, url other than
  the batch's endpoint, no model, more than one model, a model the account does not have
  (model_not_found) or one that does not take batches (model_not_supported; `batch_models`). This is the
  choice for "the batch fails validation or the line goes to the error file": the Kimi docs list these
  as input-file requirements checked while `validating`, with `failed` = "validation failed".
* Processing (`in_progress` for `batch_processing_s`, spread evenly over the lines): each line goes
  through the chat endpoint's own checks (`validate_body`, `model_of`, `check_params`, `tokenize`,
  `check_prompt`) and the same answer composer (`compose`, `completion_body`), so answers are valid and
  derived from the input. A line the chat endpoint would refuse gets its 400 in the error file; a line
  drawn by `batch_line_failure_rate` (seeded per batch: `seed` and the batch id) gets a 500 server_error.
  Not subject to the real-time limits (none are taken). Usage per line as in chat (`usage_shape`);
  `cached_tokens` is 0 unless `batch_cache` is on (undocumented: off by default). Each line is billed at
  the model's batch price (`batch_price_factor` x hit/miss/output) into the spend, and logged in the
  request log as method "BATCH", path /v1/chat/completions, with `batch_id` and `custom_id`.
* Expiry: when the next line would end after created + completion_window x time_scale, or after
  `batch_expire_after_lines` lines, the batch ends `expired`: finished lines stay in the output / error
  files, the others are written to the error file with error `batch_expired` (OpenAI's behaviour).
* Cancel: the batch goes `cancelling` at once and `cancelled` at the next step of its worker; finished
  lines stay, the rest get error `batch_cancelled`.
* Finalizing (`batch_finalize_s`), then `completed`. Output lines: `{"id", "custom_id", "response":
  {"status_code", "request_id", "body"}, "error"}`. Output / error files have purpose "batch_output".
  `error_file_id` is null when nothing failed, `output_file_id` when nothing succeeded.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from kimidocs.core.batching import (
    BATCH_ENDPOINT,
    CANCELLABLE,
    BatchInputError,
    check_metadata,
    parse_window,
)
from kimidocs.core.models import ModelInfo
from kimidocs.emulator.app import ApiError, Emulator, Turn
from kimidocs.emulator.cache import block_chain
from kimidocs.emulator.prompt import BadRequest

NOT_OPEN = "The API you are accessing is not open"
_STEP_S = 0.05  # how often a sleeping worker looks for cancel / reset


def _now() -> int:
    return int(time.time())


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "ok",
            "status_details": "",
        }


@dataclass
class BatchJob:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    window_s: float  # real seconds (scaled)
    metadata: dict[str, str]
    created_at: int
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int | None] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)

    def obj(self) -> dict[str, Any]:
        names = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at")
        data: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + math.ceil(self.window_s),
            **{name: self.times.get(name) for name in (*names, "cancelling_at", "cancelled_at")},
            "request_counts": {"completed": self.completed, "failed": self.failed, "total": self.total},
            "metadata": dict(self.metadata),
        }
        if self.errors:
            data["errors"] = {"object": "list", "data": list(self.errors)}
        return data


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename or None, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ApiError(400, "invalid_request_error", "Invalid request: expected multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "line": line, "param": param}


class BatchApi:
    """The Batch API handlers and workers of one `Emulator`."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.state = emu.state

    # --- files ---------------------------------------------------------------------------------------------

    def _file(self, file_id: str) -> StoredFile:
        with self.state.lock:
            stored = self.state.files.get(file_id)
        if stored is None:
            raise ApiError(404, "resource_not_found_error", f"file {file_id} not found")
        return stored

    def _store(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(self.state.next_id("file"), filename, purpose, data, _now())
        with self.state.lock:
            self.state.files[stored.id] = stored
        return stored

    async def upload(self, request: Request, turn: Turn) -> dict[str, Any]:
        cfg = self.emu.config
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise ApiError(
                400,
                "invalid_request_error",
                "Invalid request: send multipart/form-data with file and purpose",
            )
        raw = await request.body()
        fields = await anyio.to_thread.run_sync(parse_multipart, content_type, raw)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if purpose != "batch":
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid purpose: {purpose!r}; the emulator stores only 'batch'",
            )
        if "file" not in fields:
            raise ApiError(400, "invalid_request_error", "Invalid request: file is required")
        filename, data = fields["file"]
        filename = filename or "upload.jsonl"
        if not filename.endswith(".jsonl"):
            raise ApiError(400, "invalid_request_error", "Invalid request: a batch file must be .jsonl")
        if not data:
            raise ApiError(
                400, "invalid_request_error", "File size is zero, please confirm and re-upload the file"
            )
        if len(data) > cfg.batch_max_file_bytes:
            mb = cfg.batch_max_file_bytes // (1024 * 1024) or 1
            raise ApiError(
                400,
                "invalid_request_error",
                f"File size is too large, max file size is {mb}MB, please confirm and re-upload the file",
            )
        lines = sum(1 for line in data.splitlines() if line.strip())
        if lines > cfg.batch_max_lines:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Invalid request: the file has {lines} requests; at most {cfg.batch_max_lines} per batch",
            )
        with self.state.lock:
            count = sum(1 for f in self.state.files.values() if f.purpose == "batch")
        if count >= cfg.batch_max_files:
            raise ApiError(
                400,
                "invalid_request_error",
                f"The number of files you have uploaded exceeded the max file count {cfg.batch_max_files}, "
                "please delete previous uploaded files",
            )
        stored = self._store(filename, "batch", data)
        turn.entry["file_id"] = stored.id
        return stored.obj()

    async def list_files(self, request: Request, turn: Turn) -> dict[str, Any]:
        with self.state.lock:
            files = [f.obj() for f in self.state.files.values()]
        return {"object": "list", "data": files}

    async def get_file(self, request: Request, turn: Turn) -> dict[str, Any]:
        return self._file(request.path_params["file_id"]).obj()

    async def delete_file(self, request: Request, turn: Turn) -> dict[str, Any]:
        stored = self._file(request.path_params["file_id"])
        with self.state.lock:
            self.state.files.pop(stored.id, None)
        return {"id": stored.id, "object": "file", "deleted": True}

    async def file_content(self, request: Request, turn: Turn) -> Response:
        stored = self._file(request.path_params["file_id"])
        return Response(stored.data, media_type="application/jsonl")

    # --- batches -------------------------------------------------------------------------------------------

    def _job(self, batch_id: str) -> BatchJob:
        with self.state.lock:
            job = self.state.batches.get(batch_id)
        if job is None:
            raise ApiError(404, "resource_not_found_error", f"batch {batch_id} not found")
        return job

    async def create(self, request: Request, turn: Turn) -> dict[str, Any]:
        cfg = self.emu.config
        if not cfg.batch_api or cfg.tier == "tier0":
            raise ApiError(403, "permission_denied_error", NOT_OPEN)
        data = await self.emu.read_json(request, turn)
        file_id = data.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(400, "invalid_request_error", "Invalid request: input_file_id is required")
        if data.get("endpoint") != BATCH_ENDPOINT:
            raise ApiError(
                400, "invalid_request_error", f"Invalid request: endpoint must be {BATCH_ENDPOINT}"
            )
        try:
            window_s = parse_window(data.get("completion_window"))  # type: ignore[arg-type]
            metadata = check_metadata(
                data.get("metadata") if isinstance(data.get("metadata"), dict) else None
            )
        except BatchInputError as error:
            raise ApiError(400, "invalid_request_error", f"Invalid request: {error}") from None
        stored = self._file(file_id)
        if stored.purpose != "batch":
            raise ApiError(
                400, "invalid_request_error", "Invalid request: the input file must have purpose=batch"
            )
        job = BatchJob(
            id=self.state.next_id("batch"),
            input_file_id=file_id,
            endpoint=BATCH_ENDPOINT,
            completion_window=str(data["completion_window"]),
            window_s=window_s * cfg.time_scale,
            metadata=metadata,
            created_at=_now(),
        )
        with self.state.lock:
            self.state.batches[job.id] = job
        turn.entry["batch_id"] = job.id
        threading.Thread(target=self.run, args=(job,), daemon=True, name=f"emulator-{job.id}").start()
        return job.obj()

    async def list_batches(self, request: Request, turn: Turn) -> dict[str, Any]:
        try:
            limit = max(1, min(int(request.query_params.get("limit", "20")), 100))
        except ValueError:
            raise ApiError(
                400, "invalid_request_error", "Invalid request: limit must be an integer"
            ) from None
        after = request.query_params.get("after")
        with self.state.lock:
            jobs = list(reversed(self.state.batches.values()))
            if after:
                ids = [j.id for j in jobs]
                jobs = jobs[ids.index(after) + 1 :] if after in ids else []
            page = [j.obj() for j in jobs[:limit]]
        return {"object": "list", "data": page, "has_more": len(jobs) > limit}

    async def get_batch(self, request: Request, turn: Turn) -> dict[str, Any]:
        job = self._job(request.path_params["batch_id"])
        with self.state.lock:
            return job.obj()

    async def cancel(self, request: Request, turn: Turn) -> dict[str, Any]:
        job = self._job(request.path_params["batch_id"])
        with self.state.lock:
            if job.status not in CANCELLABLE:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"Invalid request: a batch that is {job.status} cannot be cancelled",
                )
            job.status = "cancelling"
            job.times["cancelling_at"] = _now()
            job.cancel.set()
            return job.obj()

    # --- the worker ----------------------------------------------------------------------------------------

    def _pause(self, job: BatchJob, seconds: float) -> bool:
        """Sleep `seconds`; True as soon as the batch is cancelled or the emulator reset."""
        end = time.monotonic() + seconds
        while not (job.cancel.is_set() or job.abort.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                return False
            job.abort.wait(min(left, _STEP_S))
        return True

    def _set(self, job: BatchJob, status: str, stamp: str | None = None) -> None:
        with self.state.lock:
            if job.status == "cancelling" and status != "cancelled":
                return
            job.status = status
            if stamp:
                job.times[stamp] = _now()

    def run(self, job: BatchJob) -> None:
        """validating -> in_progress -> finalizing -> completed (or failed / expired / cancelled)."""
        cfg = self.emu.config
        scale = cfg.time_scale
        deadline = time.monotonic() + job.window_s
        if self._pause(job, cfg.batch_validate_s * scale):
            return self._stop(job, [], [], [])
        try:
            data = self._file(job.input_file_id).data
        except ApiError:
            data = None
        lines, errors = self.validate(data)
        if job.cancel.is_set() or job.abort.is_set():
            return self._stop(job, [], [], [])
        if errors:
            with self.state.lock:
                job.errors = errors[:100]
            return self._set(job, "failed", "failed_at")
        with self.state.lock:
            job.total = len(lines)
        self._set(job, "in_progress", "in_progress_at")
        per_line = cfg.batch_processing_s * scale / max(len(lines), 1)
        rng = random.Random(f"{cfg.seed}|{job.id}")
        done: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        expired = False
        for index, (custom_id, body) in enumerate(lines):
            fail = rng.random() < cfg.batch_line_failure_rate
            limit = cfg.batch_expire_after_lines
            if (limit is not None and index >= limit) or time.monotonic() + per_line > deadline:
                expired = True
                break
            if self._pause(job, per_line):
                break
            line, ok = self.answer_line(job, custom_id, body, fail)
            (done if ok else bad).append(line)
            with self.state.lock:
                job.completed += ok
                job.failed += not ok
        if job.abort.is_set():
            return None
        if job.cancel.is_set():
            return self._stop(job, lines, done, bad)
        if expired:
            left = lines[len(done) + len(bad) :]
            bad += [
                self._unrun(job, cid, "batch_expired", "the completion window expired") for cid, _ in left
            ]
            self._write(job, done, bad)
            return self._set(job, "expired", "expired_at")
        self._set(job, "finalizing", "finalizing_at")
        if self._pause(job, cfg.batch_finalize_s * scale) and job.abort.is_set():
            return None
        self._write(job, done, bad)
        if job.cancel.is_set():  # cancelled while finalizing: every line had finished anyway
            return self._set(job, "cancelled", "cancelled_at")
        return self._set(job, "completed", "completed_at")

    def _stop(
        self,
        job: BatchJob,
        lines: list[tuple[str, dict[str, Any]]],
        done: list[dict[str, Any]],
        bad: list[dict[str, Any]],
    ) -> None:
        if job.abort.is_set():
            return
        left = lines[len(done) + len(bad) :]
        bad = bad + [self._unrun(job, cid, "batch_cancelled", "the batch was cancelled") for cid, _ in left]
        self._write(job, done, bad)
        self._set(job, "cancelled", "cancelled_at")

    def _unrun(self, job: BatchJob, custom_id: str, code: str, message: str) -> dict[str, Any]:
        with self.state.lock:
            job.failed += 1
        return {
            "id": self.state.next_id("batch_req"),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }

    def _write(self, job: BatchJob, done: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
        def jsonl(items: list[dict[str, Any]]) -> bytes:
            return b"".join(json.dumps(i, ensure_ascii=False).encode("utf-8") + b"\n" for i in items)

        output = self._store(f"{job.id}_output.jsonl", "batch_output", jsonl(done)) if done else None
        errors = self._store(f"{job.id}_error.jsonl", "batch_output", jsonl(bad)) if bad else None
        with self.state.lock:
            job.output_file_id = output.id if output else None
            job.error_file_id = errors.id if errors else None

    # --- validation and one line ---------------------------------------------------------------------------

    def batch_model(self, model_id: str) -> ModelInfo | None:
        """The model when it takes batches on this account, else None."""
        allowed = self.emu.config.batch_models
        model = self.emu.available().get(model_id)
        if model is None:
            return None
        if allowed is None:
            return model if model.supports_batch else None
        return model if model_id in allowed else None

    def validate(self, data: bytes | None) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
        """The input file's requests, or why the whole batch fails validation."""
        if data is None:
            return [], [_error("file_not_found", "the input file no longer exists")]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return [], [_error("invalid_file", "the input file is not UTF-8")]
        lines: list[tuple[str, dict[str, Any]]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                errors.append(_error("invalid_json_line", "the line is not a JSON object", number))
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
            if missing:
                errors.append(
                    _error("missing_required_parameter", f"missing {missing[0]}", number, missing[0])
                )
                continue
            custom_id, body = obj["custom_id"], obj["body"]
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(_error("invalid_custom_id", "custom_id must be a non-empty string", number))
            elif custom_id in seen:
                errors.append(_error("duplicate_custom_id", f"custom_id {custom_id!r} is not unique", number))
            elif obj["method"] != "POST":
                errors.append(_error("invalid_method", "method must be POST", number, "method"))
            elif obj["url"] != BATCH_ENDPOINT:
                errors.append(_error("invalid_url", f"url must be {BATCH_ENDPOINT}", number, "url"))
            elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
                errors.append(
                    _error("invalid_body", "body must be a chat request with a model", number, "body")
                )
            else:
                seen.add(custom_id)
                models.add(body["model"])
                lines.append((custom_id, body))
        if len(models) > 1:
            errors.append(_error("mixed_models", "All requests in a batch must use the same model"))
        elif models and not errors:
            model_id = next(iter(models))
            if model_id not in self.emu.available():
                errors.append(
                    _error("model_not_found", f"Not found the model {model_id} or Permission denied")
                )
            elif self.batch_model(model_id) is None:
                errors.append(_error("model_not_supported", f"The model {model_id} does not support batch"))
        if not lines and not errors:
            errors.append(_error("empty_file", "the input file has no requests"))
        return lines, errors

    def answer_line(
        self, job: BatchJob, custom_id: str, data: dict[str, Any], fail: bool
    ) -> tuple[dict[str, Any], bool]:
        """One request of the batch through the chat endpoint's checks and composer: (result line, ok)."""
        emu, cfg = self.emu, self.emu.config
        request_id = self.state.next_id()
        turn = Turn(request_id, emu.log_entry("BATCH", BATCH_ENDPOINT, request_id), time.perf_counter())
        turn.entry.update(batch_id=job.id, custom_id=custom_id)
        turn.body_text = json.dumps(data, ensure_ascii=False)
        try:
            body = turn.body = emu.validate_body(data, turn)
            model = turn.model = emu.model_of(body.model)
            turn.thinking = turn.entry["thinking"] = emu.check_params(body, model)
            max_tokens = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
            turn.entry["max_tokens"] = max_tokens
            try:
                prompt = turn.prompt = emu.tokenize(body, cfg)
            except BadRequest as error:
                raise ApiError(400, "invalid_request_error", str(error)) from None
            turn.entry["prompt_tokens"] = prompt.prompt_tokens
            budget = emu.check_prompt(model, prompt, max_tokens)
            if fail:
                raise ApiError(500, "server_error", "Internal server error, please try again later")
            cached = self._cached(turn, model) if cfg.batch_cache else 0
            turn.entry["cached_tokens"] = cached
            result = emu.compose(body, prompt, turn.thinking, budget, None)
            turn.entry.update(result.log_fields())
            completion = emu.completion_body(turn, result, cached)
        except ApiError as error:
            emu.finish(turn, error.status, error.type)
            envelope = {"error": {"type": error.type, "message": error.message}}
            response = {"status_code": error.status, "request_id": request_id, "body": envelope}
            return {
                "id": self.state.next_id("batch_req"),
                "custom_id": custom_id,
                "response": response,
                "error": None,
            }, False
        if cfg.batch_cache:
            self.state.cache.insert(turn.chain, cfg.cache_max_blocks)
        turn.entry["completion_tokens"] = result.completion_tokens
        turn.entry["finish_reason"] = result.finish_reason
        self.state.add_spend(self.line_cost(model, prompt.prompt_tokens, cached, result.completion_tokens))
        emu.finish(turn, 200)
        response = {"status_code": 200, "request_id": request_id, "body": completion}
        return {
            "id": self.state.next_id("batch_req"),
            "custom_id": custom_id,
            "response": response,
            "error": None,
        }, True

    def _cached(self, turn: Turn, model: ModelInfo) -> int:
        cfg = self.emu.config
        assert turn.prompt is not None
        turn.chain = block_chain(turn.prompt.seq, f"{cfg.api_key}|{model.id}", cfg.cache_block)
        hits = self.state.cache.lookup(turn.chain, self.emu._ttl())
        return min(math.floor(hits * cfg.token_ratio) * cfg.cache_block, turn.prompt.prompt_tokens)

    @staticmethod
    def line_cost(model: ModelInfo, prompt_tokens: int, cached: int, completion_tokens: int) -> float:
        """Dollars for one line at the batch price (the model table's factor on each of the three prices)."""
        factor = model.batch_price_factor if model.batch_price_factor is not None else 1.0
        miss = prompt_tokens - cached
        return (
            (
                miss * model.price_cache_miss
                + cached * model.price_cache_hit
                + completion_tokens * model.price_output
            )
            / 1e6
            * factor
        )


__all__ = ["BatchApi", "BatchJob", "StoredFile", "parse_multipart"]
