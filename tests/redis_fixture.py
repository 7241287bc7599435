"""pytest plugin: a real Redis server (Debian's `redis-server`) for the shared Kimi limiter's tests.

It runs on 127.0.0.1 on a free port with its own working dir and no persistence, in its own process
group, and is stopped by its PID at session end. `.ci/run` installs the package; without it the fixture
fails with the install line (it never skips).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_fixture import free_port, stop_process

STARTUP_TIMEOUT_S = 30.0


@dataclass
class RedisServer:
    """A running Redis: its URL (`db` picks one of its 16 databases) and process."""

    port: int
    process: subprocess.Popen
    log: Path

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(root: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> RedisServer:
    """`redis-server` on a free loopback port with `root` as its dir; returns once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no redis-server found: install it with `apt-get install -y redis-server` (.ci/run does)"
        )
    root.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), root / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while not _pong(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"redis-server did not answer PING:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return RedisServer(port, proc, log)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis server for the session; each test uses its own limiter namespace."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_process(server.process)
