"""The API key as it comes from a human: strip it, refuse what cannot be a header, redact every form.

A key copied from a web page or read from a `.env` file often carries a trailing newline. httpx then
refuses the header (`LocalProtocolError: Illegal header value b'Bearer sk-...\\n'`) and echoes it back
escaped, so redacting only the exact key missed it. Hence: clean the key once at settings time, refuse
control and non-ASCII characters in one line that never shows the key, and redact the key in every
shape it can take in a message (raw, stripped, escaped as in a `repr`, JSON-escaped, as a header value).
"""

from __future__ import annotations

import json

__all__ = ["CHINA_BASE_URL", "INTERNATIONAL_BASE_URL", "InvalidKeyFormat", "clean_api_key", "key_forms"]

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
