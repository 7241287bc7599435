"""The Kimi Batch API client: upload a JSONL of chat requests, create a batch, poll it, read its results.

It rides on a `KimiClient` (same pooled httpx client, key, limiter slot, retry policy, error tree and key
redaction); the pure protocol (line format, limits, parsing, the facts and their sources) is in
`kimidocs.core.batching`, pricing in `costs.batch_call_cost`.

    POST /v1/files (multipart, purpose=batch)   upload(requests) -> file id
    POST /v1/batches                            create(file_id, window, metadata) -> Batch
    GET  /v1/batches/{id}                       get(batch_id) -> Batch
    GET  /v1/batches?after=&limit=              list(limit, after) -> (batches, has_more)
    POST /v1/batches/{id}/cancel                cancel(batch_id) -> Batch
    GET  /v1/files/{id}/content                 results(batch) -> {custom_id: BatchLineResult}
    DELETE /v1/files/{id}                       delete_file(file_id) (1,000 batch files per organization)

Facts we rely on (all quoted in `kimidocs.core.batching`):
* 60 % of the real-time price, not subject to real-time concurrency limits, a task not finished within
  its `completion_window` expires; kimi-k2.5 -- https://platform.kimi.ai/docs/pricing/batch
* "kimi-k2.6 and kimi-k2.5"; the line format {custom_id, method POST, url /v1/chat/completions, body};
  unique custom_id; one model per file; `.jsonl`, <= 100 MB; validating -> in_progress; output_file_id /
  error_file_id -- https://platform.kimi.ai/docs/guide/use-batch-api
* limits (1,000 batch files per organization), window 12h..7d, metadata <= 16 pairs, the batch object
  and its statuses -- https://platform.kimi.ai/docs/api/batch-create, .../api/batch-retrieve,
  .../api/batch-list, .../api/batch-cancel (cancel only from validating / in_progress / finalizing)
* Tier1 and above only -- https://platform.kimi.ai/docs/guide/use-batch-inference
Assumptions where the docs are silent (conservative): OpenAI's result-line shape
(https://platform.openai.com/docs/api-reference/batch), input problems fail the whole batch at
validation, 50,000 lines per file, no prefix-cache discount to count on inside a batch (if a line does
report cached tokens, `costs.batch_call_cost` bills them at 60 % of the hit price).

Resuming: a batch lives on the server, not in this object. Store `batch.id` (and the input file id)
before waiting; after a restart a new client calls `wait(batch_id)` / `results(get(batch_id))`.

Retries: every call goes through the retry policy of the KimiClient. `create` is not idempotent: when an
attempt fails without an answer (a transport error after the server may have created it), the next
attempt first looks for a batch already made from the same input file, so a retry never pays twice.
`wait` is bounded by `timeout_s` and by a poll count derived from it; it raises `BatchWaitTimeout`
(the batch keeps running) rather than loop forever.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kimidocs.core.batching import (
    BATCH_ENDPOINT,
    MAX_FILE_BYTES,
    MAX_LINES,
    Batch,
    BatchLineResult,
    BatchOutputError,
    check_metadata,
    encode_lines,
    parse_batch,
    parse_result_file,
    parse_window,
)
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.errors import BatchWaitTimeout, UnexpectedResponse
from kimidocs.kimi.retry import call_with_retries

__all__ = ["BatchClient", "OnPoll"]

log = logging.getLogger("kimidocs.kimi")

#: Called after each poll of `wait` with the batch as just read.
OnPoll = Callable[[Batch], None]
_FIND_PAGES = 5  # pages of the batch list searched for a batch a failed create may have made


class BatchClient:
    """Kimi's Batch API over one `KimiClient` (which it does not close). Thread-safe like the client.

    Args:
        client: the KimiClient to ride on.
        sleep / clock: injectable for tests of `wait` (defaults: time.sleep, time.monotonic).
        max_lines / max_bytes: input-file limits `upload` enforces before sending.
    """

    def __init__(
        self,
        client: KimiClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.client = client
        self._sleep = sleep
        self._clock = clock
        self.max_lines = max_lines
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"BatchClient({self.client!r})"

    # --- calls -----------------------------------------------------------------------------------------

    def _retrying(self, describe: str, fn: Callable[[int], Any]) -> Any:
        c = self.client
        return call_with_retries(fn, c.retry_policy, on_retry=c.on_retry, describe=describe)[0]

    def _json(self, method: str, path: str, describe: str, **kw: Any) -> dict[str, Any]:
        return self._retrying(
            describe, lambda _n: self.client.send_json(method, path, describe=describe, **kw)
        )

    def _batch(self, data: dict[str, Any], endpoint: str) -> Batch:
        try:
            return parse_batch(data)
        except BatchOutputError as error:
            raise UnexpectedResponse(self.client.redact(str(error)), endpoint=endpoint, status=200) from None

    # --- public API ------------------------------------------------------------------------------------

    def upload(
        self,
        requests: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]],
        *,
        filename: str = "kimidocs-batch.jsonl",
    ) -> str:
        """Upload chat request bodies keyed by custom_id (our request key) as one input file; its id.

        Bodies should be shaped by `policy.apply_policy` like real-time ones (`stream` is dropped).
        Raises `BatchInputError` (before sending) for what validation would refuse: duplicate ids, two
        models, no requests, more than `max_lines` lines or `max_bytes` bytes (`batching.split_lines`
        makes groups that fit).
        """
        pairs = requests.items() if isinstance(requests, Mapping) else requests
        data = encode_lines(pairs, max_lines=self.max_lines, max_bytes=self.max_bytes)
        if not filename.endswith(".jsonl"):
            filename += ".jsonl"
        describe = "POST /files (batch)"
        answer = self._json(
            "POST",
            "/files",
            describe,
            files={"file": (filename, data, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = answer.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise UnexpectedResponse("file object without id", endpoint=describe, status=200)
        log.info("batch input uploaded: file=%s bytes=%d", file_id, len(data))
        return file_id

    def create(
        self, file_id: str, *, window: str = "24h", metadata: Mapping[str, object] | None = None
    ) -> Batch:
        """Start a batch over an uploaded input file. `window`: 12h..7d ("24h", "3d"); `metadata`: <= 16
        string pairs (e.g. our run id), returned on every read of the batch."""
        parse_window(window)
        payload = {
            "input_file_id": file_id,
            "endpoint": BATCH_ENDPOINT,
            "completion_window": window,
            "metadata": check_metadata(metadata),
        }
        describe = "POST /batches"

        def attempt(number: int) -> Batch:
            if number > 1:
                earlier = self.find_by_input(file_id)
                if earlier is not None:
                    log.warning("batch create: reusing %s made by an earlier attempt", earlier.id)
                    return earlier
            return self._batch(
                self.client.send_json("POST", "/batches", describe=describe, json=payload), describe
            )

        batch = self._retrying(describe, attempt)
        log.info("batch created: %s status=%s file=%s", batch.id, batch.status, file_id)
        return batch

    def get(self, batch_id: str) -> Batch:
        """The batch as the server sees it now (any client, any process: ids survive restarts)."""
        describe = "GET /batches/{id}"
        return self._batch(self._json("GET", f"/batches/{batch_id}", describe), describe)

    def list(self, *, limit: int = 20, after: str | None = None) -> tuple[list[Batch], bool]:
        """One page of the organization's batches, newest first: (batches, has_more)."""
        describe = "GET /batches"
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        data = self._json("GET", "/batches", describe, params=params)
        items = data.get("data")
        if not isinstance(items, list):
            raise UnexpectedResponse("no data[] in the batch list", endpoint=describe, status=200)
        return [self._batch(d, describe) for d in items if isinstance(d, dict)], bool(data.get("has_more"))

    def find_by_input(self, file_id: str, *, pages: int = _FIND_PAGES) -> Batch | None:
        """The newest batch made from `file_id` among the first `pages` pages of the list, else None."""
        after = None
        for _ in range(pages):
            batches, more = self.list(limit=100, after=after)
            for batch in batches:
                if batch.input_file_id == file_id:
                    return batch
            if not more or not batches:
                return None
            after = batches[-1].id
        return None

    def cancel(self, batch_id: str) -> Batch:
        """Ask the server to stop a validating / in_progress / finalizing batch (status: cancelling, then
        cancelled; what finished stays in its result files). 400 `InvalidRequest` from any other status."""
        describe = "POST /batches/{id}/cancel"
        return self._batch(self._json("POST", f"/batches/{batch_id}/cancel", describe), describe)

    def wait(
        self,
        batch_id: str,
        *,
        poll_s: float = 30.0,
        max_poll_s: float = 300.0,
        timeout_s: float = 26 * 3600.0,
        on_poll: OnPoll | None = None,
    ) -> Batch:
        """Poll until the batch is terminal (completed, failed, expired or cancelled) and return it.

        Polls back off from `poll_s` by 1.5x up to `max_poll_s`. Bounded twice: by `timeout_s` on the
        clock and by the number of polls that fit in it (so a stopped clock cannot loop forever);
        then `BatchWaitTimeout`, and the batch keeps running on the server.
        """
        if not (0 < poll_s <= max_poll_s) or not (0 < timeout_s < math.inf):
            raise ValueError("need 0 < poll_s <= max_poll_s and a finite timeout_s > 0")
        started = self._clock()
        deadline = started + timeout_s
        max_polls = math.floor(timeout_s / poll_s) + 2
        delay = poll_s
        for polls in range(1, max_polls + 1):
            batch = self.get(batch_id)
            if on_poll is not None:
                on_poll(batch)
            if batch.terminal:
                log.info(
                    "batch %s %s after %d polls: %s", batch_id, batch.status, polls, batch.request_counts
                )
                return batch
            left = deadline - self._clock()
            if left <= 0 or polls == max_polls:
                raise BatchWaitTimeout(batch_id, batch.status, self._clock() - started, polls)
            self._sleep(min(delay, left))
            delay = min(delay * 1.5, max_poll_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def file_content(self, file_id: str) -> bytes:
        """The raw bytes of a file (input JSONL, output or error JSONL)."""
        describe = "GET /files/{id}/content"
        return self._retrying(
            describe, lambda _n: self.client.send_bytes("GET", f"/files/{file_id}/content", describe=describe)
        )

    def results(self, batch: Batch) -> dict[str, BatchLineResult]:
        """Every line's outcome by custom_id, from the output and error files of a terminal batch.

        A completed batch answers every line; an expired or cancelled one keeps what finished (the rest
        are absent, or present with `error_type` batch_expired / batch_cancelled); a failed one (input
        validation) has none: see `batch.errors`. Raises ValueError for a batch that is not terminal.
        """
        if not batch.terminal:
            raise ValueError(f"batch {batch.id} is {batch.status}: results exist once it is terminal")
        merged: dict[str, BatchLineResult] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # a success wins over an error
            if file_id is None:
                continue
            try:
                merged.update(parse_result_file(self.file_content(file_id)))
            except (BatchOutputError, UnicodeDecodeError) as error:
                raise UnexpectedResponse(
                    self.client.redact(f"file {file_id}: {error}"),
                    endpoint="GET /files/{id}/content",
                    status=200,
                ) from None
        return merged

    def delete_file(self, file_id: str) -> None:
        """Delete an input or result file (the organization may keep at most 1,000 batch files)."""
        describe = "DELETE /files/{id}"
        self._json("DELETE", f"/files/{file_id}", describe)
