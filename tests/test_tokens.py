"""The tokenizer loads offline from the shipped file and counts like tiktoken's o200k_base."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from kimidocs.core import tokens

PROBE = textwrap.dedent(
    """
    import socket, sys
    def refuse(*a, **k):
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse            # any download attempt fails loudly
    socket.create_connection = refuse
    from kimidocs.core import tokens
    n = tokens.count("The quick brown fox jumps over the lazy dog. 你好，世界")
    print(n)
    """
)


def test_shipped_file_is_the_one_tiktoken_expects() -> None:
    digest = hashlib.sha256(tokens.O200K_FILE.read_bytes()).hexdigest()
    assert digest == tokens.O200K_SHA256


def _run_probe(prefix: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [*prefix, sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )


def test_counts_with_sockets_disabled_and_an_empty_tiktoken_cache(tmp_path) -> None:
    proc = _run_probe([], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == tokens.count("The quick brown fox jumps over the lazy dog. 你好，世界")


def test_counts_inside_a_network_namespace_without_network(tmp_path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.fail("unshare -n is needed to prove the offline load (root in CI has it)")
    proc = _run_probe([unshare, "-n", "--"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 0


def test_plain_tiktoken_would_need_the_network(tmp_path, monkeypatch) -> None:
    """Why we ship the file: tiktoken's own loader downloads it (refused here)."""
    import tiktoken

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def refuse(*a, **k):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    tiktoken.registry.ENCODINGS.pop("o200k_base", None)
    with pytest.raises(Exception):  # noqa: B017 - requests wraps the OSError in its own error types
        tiktoken.get_encoding("o200k_base")


def test_known_counts() -> None:
    # Reference values of o200k_base (tiktoken 0.14): byte-level BPE, so every text round-trips.
    enc = tokens.encoding()
    for text in ["hello world", "Kimi 的上下文窗口是 262,144 tokens.", "", "a" * 1000]:
        assert enc.decode(enc.encode_ordinary(text)) == text
    assert tokens.count("hello world") == 2
    assert tokens.count_many(["hello world", ""]) == [2, 0]
    assert tokens.with_margin(1000) == 1101
