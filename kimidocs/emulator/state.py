"""The emulator's mutable state: knobs, prefix cache, account limits, faults, request log, spend, and
the Batch API's files and jobs.

Shared by the server's event loop, its worker threads and the in-process handle, so every change goes
through a lock. Faults are drawn from one seeded generator in a fixed order, so a run with the same seed
and the same request order injects the same faults.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from kimidocs.emulator import replay
from kimidocs.emulator.cache import PrefixCache
from kimidocs.emulator.knobs import FAULT_RATES, EmulatorConfig
from kimidocs.emulator.limits import AccountLimits

#: What `fail_next` (and the random fault knobs) can inject.
FAULT_KINDS = (
    "500", "502", "503", "504",  # server errors with Moonshot-like bodies
    "429",  # rate_limit_reached_error with Retry-After (not counted against the limits)
    "overloaded",  # 429 engine_overloaded_error, no Retry-After
    "quota",  # 429 exceeded_current_quota_error
    "drop",  # the socket is closed without a response
    "timeout",  # the answer stalls for timeout_sleep_s (ends early when the client goes away)
    "truncate",  # SSE ends before data: [DONE] (a non-stream request is dropped instead)
    "length",  # content cut in half, finish_reason "length"
    "invalid_json",  # content is broken JSON, finish_reason "stop"
)  # fmt: skip
_RATE_TO_KIND = {
    "overloaded_rate": "overloaded",
    "drop_connection_rate": "drop",
    "truncate_stream_rate": "truncate",
    "length_rate": "length",
    "invalid_json_rate": "invalid_json",
    "timeout_rate": "timeout",
}


class EmulatorState:
    """Everything one emulator instance remembers between requests."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.lock = threading.RLock()
        self.config = config
        self.clock = time.monotonic
        self.cache = PrefixCache(self.clock)
        self.limits = AccountLimits(self.clock)
        self.rng = random.Random(config.seed)
        self.fail_queue: deque[tuple[str, str | None]] = deque()  # (kind, substring the body must hold)
        self.log: deque[dict[str, Any]] = deque(maxlen=config.log_max_entries)
        self.spent_usd = 0.0
        self.counter = 0
        # Batch API (batches.py): uploaded files and batch jobs by id, in creation order
        self.files: dict[str, Any] = {}
        self.batches: dict[str, Any] = {}
        self._recordings: tuple[str, dict[str, dict[str, Any]]] | None = None

    def recordings(self, folder: str) -> dict[str, dict[str, Any]]:
        """The replay recordings of `folder` by key, read once (replay.py)."""
        with self.lock:
            if self._recordings is None or self._recordings[0] != folder:
                self._recordings = (folder, replay.load_recordings(Path(folder)))
            return self._recordings[1]

    # --- knobs -------------------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply knob changes (validated); a new `seed` restarts the fault generator."""
        with self.lock:
            new = self.config.updated(**changes)
            if "seed" in changes:
                self.rng = random.Random(new.seed)
            if new.log_max_entries != self.config.log_max_entries:
                self.log = deque(self.log, maxlen=new.log_max_entries)
            self.config = new
            return new

    def reset(self) -> None:
        """Forget requests, cache, limit windows, queued faults, spend, files and batches; knobs stay."""
        with self.lock:
            self.log.clear()
            self.cache.clear()
            self.limits.reset()
            self.fail_queue.clear()
            self.rng = random.Random(self.config.seed)
            self.spent_usd = 0.0
            for job in self.batches.values():
                job.abort.set()  # its worker thread stops without writing anything
            self.batches.clear()
            self.files.clear()

    def next_id(self, prefix: str = "chatcmpl") -> str:
        with self.lock:
            self.counter += 1
            return f"{prefix}-emu{self.counter:08d}"

    # --- faults ------------------------------------------------------------------------------------------

    def fail_next(self, kind: str, count: int = 1, match: str | None = None) -> None:
        """Fail the next `count` chat requests with `kind` (only requests whose body contains `match`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self.lock:
            self.fail_queue.extend([(kind, match)] * count)

    def draw_fault(self, body: str = "") -> str | None:
        """The fault for a chat request: the first queued one that matches, else one random draw per knob."""
        with self.lock:
            for i, (kind, match) in enumerate(self.fail_queue):
                if match is None or match in body:
                    del self.fail_queue[i]
                    return kind
            cfg = self.config
            if not any(getattr(cfg, rate) for rate in FAULT_RATES):
                return None
            chosen = None
            for rate in FAULT_RATES:
                hit = self.rng.random() < getattr(cfg, rate)
                if hit and chosen is None:
                    chosen = (
                        str(self.rng.choice((500, 502, 503)))
                        if rate == "error_5xx_rate"
                        else _RATE_TO_KIND[rate]
                    )
            return chosen

    # --- log ---------------------------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)
            path = self.config.log_file
            if path:
                with Path(path).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self.log]

    def add_spend(self, usd: float) -> None:
        with self.lock:
            self.spent_usd += usd

    def stats(self) -> dict[str, Any]:
        with self.lock:
            by_status: dict[str, int] = {}
            chat = 0
            for e in self.log:
                by_status[str(e.get("status"))] = by_status.get(str(e.get("status")), 0) + 1
                chat += e.get("path", "").endswith("/chat/completions")
            return {
                **self.limits.stats(self.config),
                "requests": len(self.log),
                "chat_requests": chat,
                "by_status": by_status,
                "cache_blocks": len(self.cache),
                "spent_usd": round(self.spent_usd, 6),
            }
