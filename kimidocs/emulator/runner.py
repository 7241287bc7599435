"""Running the emulator: uvicorn in a thread of this process, or a separate process (for Prefect workers).

Both bind a loopback port (0 = a free one, known before the first request) and return a handle with the
same controls: base_url, api_key, requests(), chat_requests(), configure(), fail_next(), reset(), stats(),
worker_env(), stop(); both are context managers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn

from kimidocs.emulator.knobs import EmulatorConfig
from kimidocs.emulator.routes import create_app
from kimidocs.emulator.state import EmulatorState


class EmulatorStartError(RuntimeError):
    """The emulator did not start listening in time (the reason is in the message or its output file)."""


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmulatorHandle:
    """The emulator served by uvicorn in a daemon thread of this process; controls act on its state."""

    def __init__(
        self,
        state: EmulatorState,
        server: uvicorn.Server,
        thread: threading.Thread,
        sock: socket.socket,
        host: str,
        port: int,
    ) -> None:
        self.state = state
        self._server = server
        self._thread = thread
        self._sock = sock
        self.host = host
        self.port = port
        self.base_url = f"http://{_url_host(host)}:{port}/v1"

    @property
    def api_key(self) -> str:
        return self.state.config.api_key

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    def requests(self, path_suffix: str | None = None) -> list[dict[str, Any]]:
        """The request log, oldest first (only paths ending with `path_suffix` when given)."""
        entries = self.state.requests()
        return [e for e in entries if path_suffix is None or e["path"].endswith(path_suffix)]

    def chat_requests(self) -> int:
        """How many chat completion requests arrived (any outcome)."""
        return len(self.requests("/chat/completions"))

    def configure(self, **knobs: Any) -> EmulatorConfig:
        return self.state.configure(**knobs)

    def fail_next(self, kind: str, count: int = 1, match: str | None = None) -> None:
        """Fail the next `count` chat requests (whose raw body contains `match`, when given) with `kind`."""
        self.state.fail_next(kind, count, match)

    def reset(self) -> None:
        self.state.reset()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def worker_env(self) -> dict[str, str]:
        """Environment that points kimidocs (or a Prefect worker) at this emulator."""
        return {"KIMI_BASE_URL": self.base_url, "KIMI_API_KEY": self.api_key}

    def stop(self) -> None:
        with self.state.lock:
            for job in self.state.batches.values():
                job.abort.set()  # batch workers stop too
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorHandle({self.base_url})"


def run_emulator_in_thread(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
) -> EmulatorHandle:
    """Start the emulator on `host:port` (0 = a free port) in a daemon thread; returns once it accepts."""
    state = EmulatorState(config or EmulatorConfig())
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state=state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            proxy_headers=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
            backlog=1024,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"kimi-emulator-{port}"
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise EmulatorStartError(f"the emulator on {host}:{port} did not start within {startup_timeout}s")
        time.sleep(0.005)
    return EmulatorHandle(state, server, thread, sock, host, port)


# ---------------------------------------------------------------------------------------------- process


class EmulatorProcess:
    """An emulator in its own process (`python -m kimidocs.emulator`); controls go over HTTP."""

    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, api_key: str, workdir: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.base_url = base_url
        self.api_key = api_key
        self.output_file = workdir / "emulator.out"
        self._workdir = workdir
        self._root = base_url.rsplit("/v1", 1)[0]

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self._root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def requests(self, path_suffix: str | None = None) -> list[dict[str, Any]]:
        entries = self._call("GET", "/_emulator/requests")
        return [e for e in entries if path_suffix is None or e["path"].endswith(path_suffix)]

    def chat_requests(self) -> int:
        return len(self.requests("/chat/completions"))

    def configure(self, **knobs: Any) -> dict[str, Any]:
        return self._call("POST", "/_emulator/config", knobs)

    def fail_next(self, kind: str, count: int = 1, match: str | None = None) -> None:
        self._call("POST", "/_emulator/fail_next", {"kind": kind, "count": count, "match": match})

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset", {})

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/stats")

    def worker_env(self) -> dict[str, str]:
        return {"KIMI_BASE_URL": self.base_url, "KIMI_API_KEY": self.api_key}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorProcess(pid={self.pid}, {self.base_url})"


def start_emulator_process(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 60.0,
    workdir: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> EmulatorProcess:
    """Start `python -m kimidocs.emulator` and wait until it listens; its output goes to a file."""
    config = config or EmulatorConfig()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kimi-emulator-"))
    work.mkdir(parents=True, exist_ok=True)
    ready = work / "ready.json"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "kimidocs.emulator",
        "--host",
        host,
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        "--quiet",
    ]
    with (work / "emulator.out").open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # the config (with the key) goes by environment, not argv, which `ps` shows to everyone
            env={**os.environ, **(env or {}), "KIMIDOCS_EMULATOR_CONFIG": config.model_dump_json()},
        )
    deadline = time.monotonic() + startup_timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            tail = (work / "emulator.out").read_text(errors="replace")[-2000:]
            raise EmulatorStartError(f"emulator process did not start (exit {proc.returncode}): {tail}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return EmulatorProcess(proc, info["base_url"], config.api_key, work)
