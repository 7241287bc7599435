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

from dataclasses import dataclass


class NoBatchSupport(ValueError):
    """The model is not known to be offered through Kimi's Batch API: no batch price, no batch."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"model {model_id!r} is not known to be offered through the Batch API")
        self.model_id = model_id


class UnknownModel(KeyError):
    """A model id that is not in our table: we cannot plan or price for it."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.model_id = model_id

    def __str__(self) -> str:
        known = ", ".join(sorted(MODELS))
        return f"unknown model {self.model_id!r}; kimidocs knows: {known}"


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
    images: bool = False  # accepts image_url parts
    max_output: int = 32_768
    test_only: bool = False  # exists only in the emulator (small windows to force map-reduce)
    retired: bool = False  # answers 404 on the real service
    batch_price_factor: float | None = None

    @property
    def supports_batch(self) -> bool:
        return self.batch_price_factor is not None


#: Batch API price / real-time price, for every model that has a batch price (the one place for 60 %).
BATCH_FACTOR = 0.6

MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        ModelInfo("kimi-k2.5", 262_144, 0.10, 0.60, 3.00, images=True, batch_price_factor=BATCH_FACTOR),
        ModelInfo("kimi-k2.6", 262_144, 0.16, 0.95, 4.00, images=True, batch_price_factor=BATCH_FACTOR),
        ModelInfo("kimi-k3", 1_048_576, 0.30, 3.00, 15.00, images=True, max_output=65_536),
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

DEFAULT_MODEL = "kimi-k2.5"


def get_model(model_id: str) -> ModelInfo:
    """Look a model up; raise `UnknownModel` naming the ones we know."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise UnknownModel(model_id) from None
