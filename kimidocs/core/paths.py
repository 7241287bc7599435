"""File names as text that UTF-8 can carry, for the database and the screen.

A Linux file name is bytes and need not be UTF-8. Python hands such a name over with each
undecodable byte as a lone surrogate (PEP 383 "surrogateescape"): that `str` opens the file
again, and `os.fsencode` gives its exact bytes back, so the pipeline keeps it as it is. But it
cannot be encoded as UTF-8: DuckDB refuses it ("Unable to cast Python instance") and printing
it raises. `shown()` is the form stored and printed: each such byte as a `\\xff` escape (any
other lone surrogate as `\\udxxx`), everything else unchanged.
"""

from __future__ import annotations


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return ch


def shown(text: str) -> str:
    """`text` with undecodable file-name bytes written as `\\xNN`: what DuckDB and terminals get."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(map(_escape, text))
    return text
