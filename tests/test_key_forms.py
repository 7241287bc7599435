"""Defect: a server that echoed the key lowercased leaked it into stderr, `calls.error`, `failures.message`
and the exports (issue 22.1). A real HTTP server on 127.0.0.1 answers every chat call with a 500 whose body
holds the Authorization header in every form a reader could undo; a whole `kimidocs analyze` run then
leaves none of them anywhere, and the stored error texts are cut to what a person needs."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from kimidocs.kimi.errors import REDACTED, redact
from kimidocs.store import Store

CLI = "import logging, sys; logging.basicConfig(level=logging.DEBUG); from kimidocs.cli import main; main()"


def _forms(key: str) -> dict[str, Callable[[str], str]]:
    """Transformations a server may apply to what it echoes; each one a reader could undo."""
    return {
        "lower": str.lower,
        "upper": str.upper,
        "swapcase": str.swapcase,
        "url-encoded": lambda t: urllib.parse.quote(t, safe=""),
        "every byte percent-encoded": lambda t: "".join(f"%{b:02x}" for b in t.encode()),
        "percent-encoded twice": lambda t: urllib.parse.quote("".join(f"%{b:02X}" for b in t.encode())),
        "unicode escapes": lambda t: "".join(f"\\u{ord(c):04x}" for c in t),
        "json of json": lambda t: json.dumps(json.dumps({"auth": t}))[1:-1],
        "python bytes escapes": lambda t: "".join(f"\\x{b:02x}" for b in t.encode()),
        "html entities": lambda t: "".join(f"&#{ord(c)};" for c in t),
        "hex": lambda t: t.encode().hex(),
        "base64": lambda t: base64.b64encode(t.encode()).decode(),
        "base64 url-safe, shifted": lambda t: base64.urlsafe_b64encode(b"x:" + t.encode()).decode(),
        "base64 of basic auth": lambda t: base64.b64encode(b"user:" + t.encode()).decode(),
    }


def _leaks(text: str, key: str) -> list[str]:
    """The forms of `key` (bare or as the header) that `text` still holds."""
    found = []
    for name, form in _forms(key).items():
        for shown in {form(key), form(f"Bearer {key}")}:
            core = shown[8:-8] if name.startswith("base64") else shown  # base64's ends depend on neighbours
            if core and core in text:
                found.append(name)
    return found + (["raw"] if key in text or key.lower() in text.lower() else [])


@pytest.fixture()
def echo_server() -> Iterator[str]:
    """A server that lists one model and answers every chat call with a 500 echoing the Authorization
    header in every form of `_forms`, inside a page of noise."""

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            listing = {"object": "list", "data": [{"id": "kimi-k2.5", "object": "model", "owned_by": "x"}]}
            self._send(200, json.dumps(listing).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ")
            lines = [f"{name}:{form(auth)} / {form(token)}" for name, form in _forms(token).items()]
            message = "upstream failed; " + "; ".join(lines) + " " + "noise " * 2_000
            self._send(500, json.dumps({"error": {"type": "server_error", "message": message}}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_redact_catches_every_reversible_form() -> None:
    key = "sk-RELSEC-" + secrets.token_hex(10)
    for name, form in _forms(key).items():
        for shown in (form(key), form(f"Bearer {key}")):
            text = f"before {shown} after"
            cleaned = redact(text, key)
            assert not _leaks(cleaned, key), (name, cleaned)
            assert REDACTED in cleaned and cleaned.startswith("before ") and cleaned.endswith(" after"), name


def test_redact_leaves_other_text_alone() -> None:
    key = "sk-RELSEC-" + secrets.token_hex(10)
    text = "sk-other-0123456789 Bearer abc %41%42 \\u0041 aGVsbG8gd29ybGQ= 0a1b2c3d"
    assert redact(text, key) == text


def test_a_server_echoing_the_key_transformed_leaks_it_nowhere(tmp_path: Path, echo_server: str) -> None:
    key = "sk-RELSEC-" + secrets.token_hex(10)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lease starts on 1 March 2026 and costs 1,200 EUR a month.\n" * 20)
    (docs / "b.txt").write_text("The loan of 5,000 USD is due on 30 June 2027.\n" * 20)
    db = tmp_path / "k.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_"))}
    env.update(KIMI_API_KEY=key, KIMI_BASE_URL=echo_server, KIMIDOCS_MAX_RETRIES="2", COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-c", CLI, "analyze", "--force", str(docs), "--db", str(db)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    shown = done.stdout + done.stderr
    assert "upstream failed" in shown  # the server's message reached the screen, cut and redacted
    with duckdb.connect(str(db), read_only=True) as con:
        errors = [r[0] for r in con.execute("SELECT error FROM calls WHERE error IS NOT NULL").fetchall()]
        messages = [r[0] for r in con.execute("SELECT message FROM failures").fetchall()]
    assert errors and messages  # the failures are recorded
    assert all("upstream failed" in e and len(e) < 1_000 for e in errors), errors[0]
    store = Store(db, read_only=True)
    try:
        exported = store.export(tmp_path / "export", "csv") + store.export(tmp_path / "parquet", "parquet")
    finally:
        store.close()
    texts = {
        "cli output": shown,
        "calls.error": "\n".join(errors),
        "failures.message": "\n".join(messages),
        "exports": "\n".join(f.read_bytes().decode("latin-1") for f in exported),
        "database file": db.read_bytes().decode("latin-1"),
    }
    for where, text in texts.items():
        assert not _leaks(text, key), f"the key leaked into {where}: {_leaks(text, key)}"
