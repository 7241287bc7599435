"""The API key as it comes from a human: strip it, refuse what cannot be a header, redact every form.

A key copied from a web page or read from a `.env` file often carries a trailing newline. httpx then
refuses the header (`LocalProtocolError: Illegal header value b'Bearer sk-...\\n'`) and echoes it back
escaped, so redacting only the exact key missed it. Hence: clean the key once at settings time, refuse
control and non-ASCII characters in one line that never shows the key, and redact the key in every
shape it can take in a message (raw, stripped, escaped as in a `repr`, JSON-escaped, as a header value).

A server may also echo the key transformed (issue 22.1: a 500 whose body held the key lowercased). So
`key_pattern` matches every form a reader could undo: any mix of letter case, percent-encoding (once or
twice), JSON/Python/HTML character escapes per character, hex, and base64 (standard and URL-safe, at each
of the three byte alignments, so the key is found inside the base64 of `Bearer <key>` or of a longer text).
"""

from __future__ import annotations

import base64
import functools
import json
import re

__all__ = [
    "CHINA_BASE_URL",
    "INTERNATIONAL_BASE_URL",
    "InvalidKeyFormat",
    "clean_api_key",
    "key_forms",
    "key_pattern",
]

#: Keys are region-bound: a key from one console answers 401 on the other host (kimi-api.md §1).
CHINA_BASE_URL = "https://api.moonshot.cn/v1"
INTERNATIONAL_BASE_URL = "https://api.moonshot.ai/v1"

_MIN_FORM_CHARS = 6  # never redact tiny fragments (a one-letter "key" would blank every message)


class InvalidKeyFormat(ValueError):
    """The key holds characters no HTTP header may carry. The message never shows the key."""


def clean_api_key(raw: str | None) -> str | None:
    """The key without surrounding whitespace; None when empty. Raise `InvalidKeyFormat` when it has
    characters an Authorization header cannot carry (control characters, non-ASCII, inner spaces)."""
    if raw is None:
        return None
    key = raw.strip()
    if not key:
        return None
    bad = [c for c in key if not (0x21 <= ord(c) <= 0x7E)]
    if bad:
        kinds = sorted(
            {
                "a control character"
                if ord(c) < 0x20 or ord(c) == 0x7F
                else "a space"
                if c == " "
                else "a non-ASCII character"
                for c in bad
            }
        )
        raise InvalidKeyFormat(
            f"KIMI_API_KEY holds {' and '.join(kinds)} ({len(bad)} in all, key not shown): "
            "copy the key again from the Moonshot console, without quotes or line breaks"
        )
    return key


def key_forms(secret: str | None) -> tuple[str, ...]:
    """Every shape the key can take in an error text, longest first (so the longest match is replaced)."""
    if not secret:
        return ()
    forms: set[str] = set()
    for base in {secret, secret.strip()}:
        if not base:
            continue
        forms.update(
            {
                base,
                f"Bearer {base}",
                repr(base)[1:-1],
                repr(base.encode("utf-8", "backslashreplace"))[2:-1],
                json.dumps(base)[1:-1],
            }
        )
    return tuple(sorted((f for f in forms if len(f) >= _MIN_FORM_CHARS), key=len, reverse=True))


def _char_forms(char: str) -> str:
    """A regex for one character of the key in any form a server may turn it into (case is folded by
    the pattern's IGNORECASE): itself, %XX (percent-encoded any number of times), \\uXXXX, \\xXX,
    &#xXX; and &#N;."""
    code = ord(char)
    hexed = f"{code:02x}"
    return f"(?:{re.escape(char)}|%(?:25)*{hexed}|\\\\u00{hexed}|\\\\x{hexed}|&\\#x0*{hexed};|&\\#0*{code};)"


def _base64_cores(key: bytes) -> set[str]:
    """The base64 characters that depend on the key's bytes alone, for each alignment of the key in a
    longer encoded text (0, 1 or 2 bytes before it), in the standard and URL-safe alphabets."""
    cores: set[str] = set()
    for pad in range(3):
        data = b"\0" * pad + key
        start = -(-pad * 4 // 3)  # first character built only from the key's bits
        end = (len(data) * 8) // 6  # characters before the ones the end of the key shares with padding
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(data).decode("ascii")[start:end]
            if len(core) >= _MIN_FORM_CHARS:
                cores.add(core)
    return cores


@functools.lru_cache(maxsize=8)
def key_pattern(secret: str) -> re.Pattern[str] | None:
    """One regex that finds the key in every reversible form (see the module docstring); None for a key
    too short to redact safely."""
    key = secret.strip()
    if len(key) < _MIN_FORM_CHARS:
        return None
    per_char = "".join(_char_forms(c) for c in key)
    raw = key.encode("utf-8")
    alternatives = [per_char, re.escape(raw.hex())]
    # base64 is case-sensitive: its forms are matched exactly, in a group of their own
    exact = sorted(_base64_cores(raw), key=len, reverse=True)
    pattern = "|".join(f"(?i:{a})" for a in alternatives) + "".join(f"|{re.escape(c)}" for c in exact)
    return re.compile(pattern)
