"""Emulator configuration: every knob in one pydantic model (it is also set at runtime from JSON).

Durations of rate-limit windows and the cache TTL are *emulated* seconds: they are multiplied by
`time_scale`, so `time_scale=0.01` makes a "minute" last 0.6 s and RPM windows can be exercised in tests.
Latencies are real milliseconds (not scaled).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_API_KEY = "sk-emulator"

# Moonshot's published tiers (kimi-api.md §8, international, early 2026). None = unlimited.
TIERS: dict[str, dict[str, int | None]] = {
    "tier0": {"concurrency": 1, "rpm": 3, "tpm": 500_000, "tpd": 1_500_000},
    "tier1": {"concurrency": 50, "rpm": 200, "tpm": 2_000_000, "tpd": None},
    "tier2": {"concurrency": 100, "rpm": 500, "tpm": 3_000_000, "tpd": None},
    "tier3": {"concurrency": 200, "rpm": 5_000, "tpm": 3_000_000, "tpd": None},
    "tier4": {"concurrency": 400, "rpm": 5_000, "tpm": 4_000_000, "tpd": None},
    "tier5": {"concurrency": 1_000, "rpm": 10_000, "tpm": 5_000_000, "tpd": None},
}

FAULT_RATES = (
    "error_5xx_rate",
    "overloaded_rate",
    "drop_connection_rate",
    "truncate_stream_rate",
    "length_rate",
    "invalid_json_rate",
    "timeout_rate",
)


class EmulatorConfig(BaseModel):
    """All knobs. Defaults: no limits, no faults, no latency, key `sk-emulator`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # identity
    api_key: str = DEFAULT_API_KEY
    org_id: str = "org-emulator"
    ak_id: str = "ak-emulator"
    # model ids the "account" has; None = every non-retired model of the table
    models: list[str] | None = None
    # Models of a foreign server that are not in kimidocs' table: id -> context window. Served with plain
    # OpenAI rules (no thinking switch, sampling free), on top of `models`. Asked for JSON by the system
    # prompt but without response_format, they answer it inside prose and a ```json fence, as small models do.
    extra_models: dict[str, int] | None = None
    balance_usd: float = 1_000.0  # starting balance shown by /users/me/balance (spent is subtracted)
    quota_exceeded: bool = False  # every chat call -> 429 exceeded_current_quota_error

    # rate limits: a tier name sets all four, explicit values override it; None everywhere = unlimited
    tier: str | None = None
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    time_scale: float = Field(1.0, gt=0)

    # token counting and the prefix cache
    token_ratio: float = Field(1.04, gt=0)  # Kimi's count / our o200k count (deterministic, rounded up)
    image_tokens: int = Field(1_000, ge=0)  # per image part
    message_overhead: int = Field(4, ge=0)  # per message (role markers)
    cache_block: int = Field(256, ge=1)
    cache_ttl_s: float | None = None  # emulated seconds; renewed on hit; None = never expires
    cache_max_blocks: int = Field(2_000_000, ge=1)

    # answers
    reasoning: Literal["auto", "off"] = "auto"  # "auto": reasoning_content when thinking is on
    # Where usage appears (kimi-api.md §6). "both": top-level `usage` and, in streams, `choices[0].usage`
    # (what real kimi-k2.5 sent), with cached tokens in both fields. "moonshot": streams put usage only in
    # `choices[0].usage` (plus the top-level chunk when include_usage is asked); cached only as
    # `usage.cached_tokens`. "openai": usage only at the top level, in streams only with include_usage;
    # cached only in `prompt_tokens_details`. "none": no usage anywhere (a server that ignores the flag).
    usage_shape: Literal["both", "moonshot", "openai", "none"] = "both"
    # Whether rate-limit 429s carry a Retry-After header: Kimi sometimes omits it (kimi-api.md §7), and
    # the client must then read "try again after N seconds" from the message.
    retry_after_header: bool = True
    # Identity: the emulator says what it is (header `X-Kimidocs-Emulator`), so clients label rows from what
    # answers, not from the address. `identify=False` and another `owned_by` make it pass for a foreign
    # OpenAI-compatible server (a local model server, a gateway), to test that labelling.
    identify: bool = True
    owned_by: str = "moonshot"
    # How a streamed tool call arrives: "one" delta, or "split" as OpenAI does (id and name first, then the
    # arguments in pieces, each piece its own delta with the same index).
    tool_call_deltas: Literal["one", "split"] = "one"

    # latency (real milliseconds)
    latency_ms: float = Field(0.0, ge=0)  # before the first byte of an answer
    # Admitted chat requests wait (their prefix already looked up) until this is cleared: tests make two
    # calls overlap for certain, waiting on `in_flight`, instead of timing them with latency.
    hold: bool = False
    latency_per_token_ms: float = Field(0.0, ge=0)  # per output token (spread over stream chunks)

    # random faults (probabilities, seeded), decided per chat request
    seed: int = 0
    error_5xx_rate: float = Field(0.0, ge=0, le=1)
    overloaded_rate: float = Field(0.0, ge=0, le=1)
    drop_connection_rate: float = Field(0.0, ge=0, le=1)
    truncate_stream_rate: float = Field(0.0, ge=0, le=1)
    length_rate: float = Field(0.0, ge=0, le=1)
    invalid_json_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    # how long a "timeout" fault stalls (it stops early when the client disconnects)
    timeout_sleep_s: float = Field(600.0, ge=0)

    # Batch API (batches.py). Durations are emulated seconds (x time_scale), like the limit windows.
    batch_api: bool = True  # False: /v1/batches answers 403, as for an account below Tier1 (tier0 too)
    batch_models: list[str] | None = None  # models that take batches; None = those with a batch price
    batch_validate_s: float = Field(2.0, ge=0)  # time in `validating`
    batch_processing_s: float = Field(60.0, ge=0)  # time in `in_progress` for the whole batch
    batch_finalize_s: float = Field(2.0, ge=0)  # time in `finalizing`
    batch_line_failure_rate: float = Field(0.0, ge=0, le=1)  # lines answered 500 (seeded per batch)
    # Deterministic expiry for tests: the window runs out after this many lines (else it runs out when
    # `completion_window` x time_scale has passed, which needs batch_processing_s > the window).
    batch_expire_after_lines: int | None = Field(None, ge=0)
    batch_cache: bool = False  # whether the prefix cache serves lines of a batch (undocumented: off)
    batch_max_file_bytes: int = Field(100 * 1024 * 1024, ge=1)
    batch_max_lines: int = Field(50_000, ge=1)
    batch_max_files: int = Field(1_000, ge=1)

    # Replay (replay.py): answer chat calls with the recordings in this folder (a real server's answers,
    # by request key), 400 for a request without one. Pair with extra_models / identify / owned_by.
    replay_dir: str | None = None

    # request log
    log_file: str | None = None  # JSON Lines, appended (shared by processes)
    log_max_entries: int = Field(100_000, ge=1)  # in memory

    @model_validator(mode="after")
    def _known_tier(self) -> EmulatorConfig:
        if self.tier is not None and self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; known: {', '.join(TIERS)}")
        return self

    def limit(self, name: str) -> int | None:
        """The effective concurrency / rpm / tpm / tpd: explicit value, else the tier's, else None."""
        explicit = getattr(self, name)
        if explicit is not None:
            return int(explicit) if explicit > 0 else None
        return TIERS[self.tier][name] if self.tier else None

    def updated(self, **changes: Any) -> EmulatorConfig:
        """A validated copy with `changes` applied (unknown knobs are an error)."""
        return EmulatorConfig.model_validate({**self.model_dump(), **changes})
