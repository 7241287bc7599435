"""The one table of model facts: windows, prices, request rules.

Nothing else in the code base hard-codes a context window or a price; everything asks
`get_model(model_id)`. Sources for every number: ../shared/kimi-api.md (§1 windows,
§2c prices, §1 fixed sampling parameters and the thinking switch).

Batch API (`batch_price_factor`): "Batch API inference costs are 60% of the standard model price"
(https://platform.kimi.ai/docs/pricing/batch). Models: that page says kimi-k2.5 only; the later guide
(https://platform.kimi.ai/docs/guide/use-batch-api) says "kimi-k2.6 and kimi-k2.5". Every other model:
unknown, so None (no batch). The factor applies to each of the three prices (see `costs.batch_call_cost`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NoBatchSupport(ValueError):
    """The model is not known to be offered through Kimi's Batch API: no batch price, no batch."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"model {model_id!r} is not known to be offered through the Batch API")
        self.model_id = model_id


class UnknownModel(KeyError):
    """A model id that is not in our table: we cannot plan or price for it."""

    def __init__(self, model_id: str, declared: Mapping[str, ModelInfo] | None = None) -> None:
        super().__init__(model_id)
        self.model_id = model_id
        self.declared = tuple(declared or ())

    def __str__(self) -> str:
        known = ", ".join(sorted({*MODELS, *self.declared}))
        return (
            f"unknown model {self.model_id!r}; kimidocs knows: {known}. To use another OpenAI-compatible "
            f"model, declare it in a TOML file named by KIMIDOCS_MODELS_FILE: "
            f'[models."{self.model_id}"] window = 8192, max_output = 1024, price_input = 0, '
            f"price_output = 0, json_mode = true, images = false"
        )


class ModelsFileError(ValueError):
    """A KIMIDOCS_MODELS_FILE that cannot be read or declares a model wrongly (one line)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts about one model id. Prices are USD per 1M tokens.

    `batch_price_factor`: Batch API price / real-time price (0.6), None when the model is not known to be
    offered through the Batch API.
    """

    id: str
    window: int
    price_cache_hit: float
    price_cache_miss: float
    price_output: float
    fixed_sampling: bool = True  # temperature/top_p etc. fixed server-side: omit them
    thinking_switch: bool = True  # accepts {"thinking": {"type": "disabled"}}
    # Models whose thinking depth is `reasoning_effort` (low/high/max, default max) instead of the switch:
    # the effort an extraction call asks for (kimi-k3; docs/KIMI.md "Request rules").
    reasoning_effort: str | None = None
    # Takes `prompt_cache_key` (a request parameter "to improve hit rates", ../shared/kimi-api.md 2026-12
    # refresh; unverified whether the platform honours it): one key per document prefix.
    prompt_cache_key: bool = False
    images: bool = False  # accepts image_url parts
    max_output: int = 32_768
    test_only: bool = False  # exists only in the emulator (small windows to force map-reduce)
    retired: bool = False  # answers 404 on the real service
    retires: str | None = None  # ISO date it was (or is announced to be) retired on, when known
    successor: str | None = None  # the model a run without an explicit choice moves to when it is gone
    batch_price_factor: float | None = None
    kimi: bool = True  # a Kimi model: Kimi's request rules apply (policy.py); False for declared models
    json_mode: bool = True  # accepts response_format {"type": "json_object"}

    @property
    def supports_batch(self) -> bool:
        return self.batch_price_factor is not None


#: Batch API price / real-time price, for every model that has a batch price (the one place for 60 %).
BATCH_FACTOR = 0.6

MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        # Retirement dates and successors: docs/KIMI.md-to-be; ../shared/kimi-api.md §0 (kimi-k2.5 retired
        # 2026-08-31 by a third-party release note; kimi-k2.6 announced to retire 2027-01-07, its calls then
        # switched to kimi-k3 and billed at K3's prices).
        ModelInfo(
            "kimi-k2.5",
            262_144,
            0.10,
            0.60,
            3.00,
            images=True,
            batch_price_factor=BATCH_FACTOR,
            retires="2026-08-31",
            successor="kimi-k2.6",
        ),
        ModelInfo(
            "kimi-k2.6",
            262_144,
            0.16,
            0.95,
            4.00,
            images=True,
            batch_price_factor=BATCH_FACTOR,
            retires="2027-01-07",
            successor="kimi-k3",
            prompt_cache_key=True,
        ),
        ModelInfo(
            "kimi-k3",
            1_048_576,
            0.30,
            3.00,
            15.00,
            images=True,
            max_output=131_072,
            thinking_switch=False,
            reasoning_effort="low",
            prompt_cache_key=True,
        ),
        ModelInfo("kimi-k2-0905-preview", 262_144, 0.15, 0.60, 2.50, thinking_switch=False, retired=True),
        ModelInfo(
            "moonshot-v1-128k",
            131_072,
            2.00,
            2.00,
            5.00,
            fixed_sampling=False,
            thinking_switch=False,
            retired=True,
        ),
        # Emulator-only models with small windows, so tests force map-reduce on real documents.
        # They take batches like kimi-k2.5, whose prices they copy.
        ModelInfo(
            "kimidocs-test-8k",
            8_192,
            0.10,
            0.60,
            3.00,
            images=True,
            max_output=2_048,
            test_only=True,
            batch_price_factor=BATCH_FACTOR,
        ),
        ModelInfo(
            "kimidocs-test-32k",
            32_768,
            0.10,
            0.60,
            3.00,
            images=True,
            max_output=4_096,
            test_only=True,
            batch_price_factor=BATCH_FACTOR,
        ),
    )
}

DEFAULT_MODEL = "kimi-k2.5"  # the client's default; a run moves along `successor` when it is not offered


def successors(model_id: str) -> list[str]:
    """The chain of successors of `model_id` in the table, nearest first (no loops)."""
    chain: list[str] = []
    current = MODELS.get(model_id)
    while current is not None and current.successor and current.successor not in chain:
        chain.append(current.successor)
        current = MODELS.get(current.successor)
    return chain


def get_model(model_id: str, declared: Mapping[str, ModelInfo] | None = None) -> ModelInfo:
    """Look a model up in the table, then in the user's `declared` models; raise `UnknownModel` naming the
    ones we know and how to declare another."""
    found = MODELS.get(model_id) or (declared or {}).get(model_id)
    if found is None:
        raise UnknownModel(model_id, declared)
    return found


# ------------------------------------------------------------------------------ models declared by the user

_DECLARED_KEYS = {
    "window",
    "max_output",
    "price_input",
    "price_cached",
    "price_output",
    "json_mode",
    "images",
}


def load_models_file(path: Path) -> dict[str, ModelInfo]:
    """Models declared in a TOML file (KIMIDOCS_MODELS_FILE), for any OpenAI-compatible server:

        [models."smollm2-135m"]
        window = 8192          # context window, tokens (required)
        max_output = 1024      # longest answer asked for (default: a quarter of the window)
        price_input = 0        # USD per 1M prompt tokens (default 0); price_cached defaults to it
        price_output = 0       # USD per 1M output tokens (default 0)
        json_mode = true       # the server accepts response_format json_object (default true)
        images = false

    Declared models are not Kimi's: plain OpenAI requests (no `thinking`, sampling left alone), no batch.
    A table id cannot be redeclared. Raises `ModelsFileError` with one line naming the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelsFileError(f"KIMIDOCS_MODELS_FILE: cannot read {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ModelsFileError(f"KIMIDOCS_MODELS_FILE: {path} is not valid TOML: {err}") from None
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ModelsFileError(f'KIMIDOCS_MODELS_FILE: {path} declares no [models."ID"] table')
    return {model_id: _declared(model_id, entry) for model_id, entry in models.items()}


def _declared(model_id: str, entry: Any) -> ModelInfo:
    where = f'KIMIDOCS_MODELS_FILE: [models."{model_id}"]'
    if model_id in MODELS:
        raise ModelsFileError(f"{where}: {model_id} is in kimidocs' own table and cannot be redeclared")
    if not isinstance(entry, dict):
        raise ModelsFileError(f"{where} must be a table")
    unknown = sorted(set(entry) - _DECLARED_KEYS)
    if unknown:
        raise ModelsFileError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_DECLARED_KEYS))}"
        )

    def number(key: str, default: float | None, *, integer: bool = False, low: float = 0) -> Any:
        value = entry.get(key, default)
        if value is None:
            raise ModelsFileError(f"{where}: {key} is required")
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not math.isfinite(value) or value < low:
            kind = "an integer" if integer else "a number"
            raise ModelsFileError(f"{where}: {key} must be {kind} >= {low:g}")
        return value

    def flag(key: str, default: bool) -> bool:
        value = entry.get(key, default)
        if not isinstance(value, bool):
            raise ModelsFileError(f"{where}: {key} must be true or false")
        return value

    window = number("window", None, integer=True, low=512)
    max_output = number("max_output", window // 4, integer=True, low=1)
    if max_output >= window:
        raise ModelsFileError(f"{where}: max_output ({max_output}) must be below window ({window})")
    price_input = float(number("price_input", 0.0))
    return ModelInfo(
        model_id,
        window,
        price_cache_hit=float(number("price_cached", price_input)),
        price_cache_miss=price_input,
        price_output=float(number("price_output", 0.0)),
        fixed_sampling=False,
        thinking_switch=False,
        images=flag("images", False),
        max_output=max_output,
        kimi=False,
        json_mode=flag("json_mode", True),
    )
