"""Offline token counting with tiktoken's o200k_base, shipped in the package.

tiktoken downloads its BPE files at first use; here there is no network, so the o200k_base
ranks (MIT, from tiktoken; converted byte-identical from quicktok-v1 0.4.0's vocabulary)
live in `kimidocs/core/data/` and are loaded with tiktoken's own `load_tiktoken_bpe`, which checks
the sha256 tiktoken itself expects. Kimi's own tokenizer is not available offline, so counts
are an estimate; `SAFETY_MARGIN` covers the difference and the exact count comes from
Kimi's estimate endpoint when a request is close to the window.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

O200K_FILE = Path(__file__).parent / "data" / "o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# Same split pattern as tiktoken_ext.openai_public.o200k_base.
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Relative margin between our o200k estimate and Kimi's billed prompt tokens. Tuned from the
# calls table (estimate vs billed, side by side); 10% until real data says otherwise.
SAFETY_MARGIN = 0.10
# Per-message overhead of the chat format (role markers), counted like OpenAI's format.
MESSAGE_OVERHEAD = 4


@cache
def encoding() -> tiktoken.Encoding:
    """The o200k_base encoding, loaded from the shipped file, hash-checked, no network."""
    ranks = load_tiktoken_bpe(str(O200K_FILE), expected_hash=O200K_SHA256)
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=_O200K_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    )


def count(text: str) -> int:
    """Tokens in `text` (special-token strings are counted as plain text, never refused)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def count_many(texts: list[str]) -> list[int]:
    """Token counts of several texts (one call, so the encoder's batch path can be used)."""
    enc = encoding()
    return [len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=2)] if texts else []


def with_margin(tokens: int, margin: float = SAFETY_MARGIN) -> int:
    """An upper bound for Kimi's count of a text we counted as `tokens`."""
    return int(tokens * (1.0 + margin)) + 1
