"""pytest plugin: one real `prefect server` per test session, on a free loopback port.

Only tests that ask for `prefect_server` pay for it (about 10 s cold on 2 cores). The server runs with
its own temporary PREFECT_HOME (SQLite DB, no UI, no telemetry) in its own process group, and is
stopped by its PID at session end, also when tests fail. `server.env()` is the environment for every
`prefect ...` / worker subprocess of a test: it points at this server and nowhere else.

`prefect_server_pg` is the same on PostgreSQL (a database of its own in the `postgres` fixture's
server), as several machines would run it. `clean_env` keeps PYTHONPATH, so workers and CLI runs
import the code of the checkout the tests run from.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from postgres_fixture import PostgresServer

    from kimidocs.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port nobody listens on right now (the usual bind-to-0 trick; tiny race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any PREFECT_* / KIMI* / KIMIDOCS_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KIMI_", "KIMIDOCS_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
            "PREFECT_CLI_PROMPT": "false",
            "COLUMNS": "200",
        }
    )
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen, *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group we started (by its PID), then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_http_ok(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll `url` until it answers 2xx; fail with the process log when it dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s:\n{tail}")


@dataclass
class PrefectServer:
    """A running server: its API URL, home, log file, and helpers to run the CLI against it."""

    api_url: str
    home: Path
    log: Path
    process: subprocess.Popen

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return clean_env({"PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url, **(extra or {})})

    def cli(
        self,
        *args: str,
        timeout: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`prefect --no-prompt ARGS` from the repo root, bounded in time."""
        proc = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args],
            cwd=REPO,
            env=self.env(extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"prefect {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def api(self, method: str, path: str, body: object | None = None, timeout: float = 15.0) -> object:
        """One JSON call to the REST API (`path` after /api)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def start_prefect_server(
    home: Path, *, timeout_s: float = STARTUP_TIMEOUT_S, database_url: str | None = None
) -> PrefectServer:
    """`prefect server start` on a free port with `home` as PREFECT_HOME; returns once /api/health answers.

    `database_url` (e.g. `postgresql+asyncpg://...`) replaces the SQLite file in `home`.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    env = clean_env({"PREFECT_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false"})
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "prefect"),
                "--no-prompt",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--analytics-off",
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop exactly what we started
        )
    try:
        wait_http_ok(f"{api_url}/health", timeout_s, proc, log)
    except BaseException:
        stop_process(proc)
        raise
    return PrefectServer(api_url=api_url, home=home, log=log, process=proc)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server for the whole session (started on first use)."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture(scope="session")
def prefect_server_pg(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """A real Prefect server on PostgreSQL for the whole session: its own database in `postgres`."""
    database = postgres.create_database("prefect")
    url = postgres.url(database, driver="postgresql+asyncpg")
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-pg-home"), database_url=url)
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """Point Prefect in *this* process at the session server (for client calls made by the test)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Factory: `start(**knobs)` runs the Kimi emulator as its own process (logged to a JSON Lines file)."""
    from kimidocs.emulator import EmulatorConfig, start_emulator_process

    started: list[EmulatorProcess] = []

    def start(**knobs: Any) -> EmulatorProcess:
        work = tmp_path / f"emulator-{len(started)}"
        knobs.setdefault("log_file", str(work / "requests.jsonl"))
        proc = start_emulator_process(EmulatorConfig(**knobs), workdir=work, env=clean_env())
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Entries of an emulator log file (complete lines only)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
