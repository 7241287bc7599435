"""Passwords in connection strings, hidden before anything is printed or stored.

One rule for every server kimidocs connects to: PostgreSQL (a DuckLake catalog, key=value or URL form) and
Redis (the shared limiter, `redis://user:password@host`).
"""

from __future__ import annotations

import re

__all__ = ["redact_passwords"]

_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact_passwords(text: str) -> str:
    """`text` with every password (libpq key=value, or the one in a URL's user info) replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1***@", _KV_PASSWORD.sub(r"\1***", text))
