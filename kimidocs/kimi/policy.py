"""Per-model request rules, applied to a chat body just before it is sent. Pure: dict in, new dict out.

Why each rule (kimi-api.md §1): kimi-* models fix their sampling parameters server-side and answer 400
`invalid temperature` to any other value, so they are removed; thinking is on by default for k2.5/k2.6
and costs output tokens and time, so extraction calls switch it off explicitly; `reasoning_effort` next
to `thinking` is a 400; TPM is charged on `max_tokens`, so it is always sent explicitly (the server's
default would be charged otherwise); prompt + max_tokens over the window is a 400, caught here first.
Models declared by the user (`ModelInfo.kimi` False) get a plain OpenAI request: no `thinking`, sampling
left as sent, and `response_format` only when the model declares `json_mode`.
"""

from __future__ import annotations

import copy
from typing import Any

from kimidocs.core.models import ModelInfo
from kimidocs.kimi.errors import ContextLengthExceeded

__all__ = ["FIXED_SAMPLING_PARAMS", "apply_policy", "should_stream"]

FIXED_SAMPLING_PARAMS = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")

# The platform cuts requests at 5 minutes (504). Non-thinking kimi-k2.5 writes a few dozen tokens/s,
# and prefill of a big prompt takes tens of seconds: past these sizes, stream so the answer keeps flowing.
STREAM_ABOVE_OUTPUT_TOKENS = 4_096
STREAM_ABOVE_PROMPT_TOKENS = 64_000


def apply_policy(
    body: dict[str, Any],
    model: ModelInfo,
    *,
    thinking: bool = False,
    prompt_tokens: int | None = None,
    cache_key: str | None = None,
) -> dict[str, Any]:
    """A copy of `body` that `model` accepts.

    - sets `model` when absent;
    - drops fixed sampling params for `fixed_sampling` models (Kimi models only);
    - `thinking: {"type": "disabled"}` (or "enabled" when `thinking`) when the model has the switch,
      and drops `reasoning_effort`, which conflicts with it (Kimi models only); a model that takes
      `reasoning_effort` instead (kimi-k3) gets its extraction effort ("high" when `thinking`), no switch;
    - drops `response_format` for a declared model without `json_mode`;
    - `prompt_cache_key` = `cache_key` (the request's prefix key) for a model that takes it;
    - sets `max_tokens` to the model's `max_output` when absent;
    - keeps everything else (`response_format`, `tools`, `stream`...) untouched;
    - raises `ContextLengthExceeded` (status None) when `prompt_tokens + max_tokens > window`.
    """
    out = copy.deepcopy(body)
    out.setdefault("model", model.id)
    if model.kimi and model.fixed_sampling:
        for key in FIXED_SAMPLING_PARAMS:
            out.pop(key, None)
    if not model.kimi:
        out.pop("thinking", None)
        if not model.json_mode:
            out.pop("response_format", None)
    elif model.thinking_switch:
        out["thinking"] = {"type": "enabled" if thinking else "disabled"}
        out.pop("reasoning_effort", None)
    elif model.reasoning_effort is not None:  # kimi-k3: the depth instead of the switch, never both
        out.pop("thinking", None)
        out["reasoning_effort"] = "high" if thinking else model.reasoning_effort
    if cache_key and model.kimi and model.prompt_cache_key:  # the same for every call over one prefix
        out["prompt_cache_key"] = cache_key
    if out.get("max_tokens") is None:
        out["max_tokens"] = model.max_output
    if prompt_tokens is not None:
        requested = prompt_tokens + int(out["max_tokens"])
        if requested > model.window:
            raise ContextLengthExceeded(
                status=None,
                type="local_check",
                message=(
                    f"prompt ({prompt_tokens}) + max_tokens ({out['max_tokens']}) = {requested} "
                    f"exceeds the {model.id} window of {model.window}"
                ),
                model=model.id,
                window=model.window,
                requested=requested,
            )
    return out


def should_stream(prompt_tokens: int, max_tokens: int) -> bool:
    """Stream when the call could run into the platform's 5-minute cut (big prompt or long answer)."""
    return max_tokens > STREAM_ABOVE_OUTPUT_TOKENS or prompt_tokens > STREAM_ABOVE_PROMPT_TOKENS
