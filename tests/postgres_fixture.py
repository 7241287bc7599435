"""pytest plugin: a real PostgreSQL server (Debian's `postgresql` package) for the tests that need one.

The server gets its own data dir and socket dir under pytest's tmp, listens on 127.0.0.1 on a free
port with `trust` auth (loopback only, throwaway data), runs in its own process group, and is stopped
by its PID (fast shutdown) at session end. As root (CI, sessions) it runs as the `postgres` system user,
because PostgreSQL refuses to run as root.

`.ci/run` installs the package; on a machine without it the fixture fails with the install line, it
never skips: the scale-out tests must run in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_fixture import free_port, stop_process

PG_VERSIONS = ("17", "16", "15")
STARTUP_TIMEOUT_S = 60.0


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server's bin dir (Debian keeps them under /usr/lib/postgresql)."""
    for version in PG_VERSIONS:
        candidate = Path("/usr/lib/postgresql") / version / "bin"
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "no PostgreSQL server found: install it with `apt-get install -y postgresql` (.ci/run does)"
    )


def _as_postgres_user() -> dict[str, object]:
    """Popen arguments that drop root to the `postgres` user (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class PostgresServer:
    """A running PostgreSQL: where it listens and how to reach it."""

    host: str
    port: int
    user: str
    data_dir: Path
    log: Path
    process: subprocess.Popen

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq key/value form (DuckDB's postgres extension and psql take it)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres", driver: str = "postgresql") -> str:
        """URL form, e.g. driver='postgresql+asyncpg' for PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run `sql` through psql; returns its unaligned output."""
        proc = subprocess.run(
            [str(pg_bindir() / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname)],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"psql failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """A new empty database; returns its name."""
        self.psql(f'CREATE DATABASE "{name}"')
        return name


def start_postgres(root: Path, *, timeout_s: float = STARTUP_TIMEOUT_S) -> PostgresServer:
    """initdb into `root`/data, start the server on a free loopback port, return once it accepts."""
    bindir = pg_bindir()
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
        **_as_postgres_user(),  # type: ignore[arg-type]
    )
    port = free_port()
    with open(log, "wb") as out:
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(sockets),
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",  # throwaway test data: durability is not what we test
                "-c",
                "synchronous_commit=off",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_postgres_user(),  # type: ignore[arg-type]
        )
    server = PostgresServer("127.0.0.1", port, user, data, log, proc)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-t", "2"],
            capture_output=True,
        )
        if ready.returncode == 0:
            return server
        if time.monotonic() > deadline:
            stop_process(proc)
            raise TimeoutError(f"postgres did not accept within {timeout_s:.0f}s:\n{log.read_text()}")
        time.sleep(0.1)


def stop_postgres(server: PostgresServer) -> None:
    """Fast shutdown (SIGINT) of the postmaster we started, by PID; SIGKILL after a grace period."""
    proc = server.process
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, 2)  # SIGINT: "fast" shutdown, aborts sessions, no waiting for clients
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        stop_process(proc, grace_s=5)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; tests create their own databases in it.

    Its root is a fresh folder directly under the system temp dir, not pytest's tmp: pytest's is private
    to root (0700), and the server runs as `postgres`.
    """
    root = Path(tempfile.mkdtemp(prefix="kimidocs-postgres-"))
    try:
        server = start_postgres(root)
        try:
            yield server
        finally:
            stop_postgres(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)
