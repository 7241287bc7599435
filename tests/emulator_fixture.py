"""pytest plugin: the Kimi emulator as a real server on a free loopback port. No mocks.

    kimi_emulator           a fresh emulator (default knobs, key sk-emulator) in a thread of this process
    make_emulator(**knobs)  factory: make_emulator(tier="tier0", time_scale=0.01, latency_ms=50) -> handle
    kimi_emulator_process   an emulator in its own process (for Prefect workers and other subprocesses)

Every handle is stopped at teardown. Handles expose base_url, api_key, requests(), chat_requests(),
configure(**knobs), fail_next(kind, count, match=None), reset(), stats(), worker_env().
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kimidocs.emulator import (
    EmulatorConfig,
    EmulatorHandle,
    EmulatorProcess,
    run_emulator_in_thread,
    start_emulator_process,
)


@pytest.fixture()
def kimi_emulator() -> Iterator[EmulatorHandle]:
    with run_emulator_in_thread(EmulatorConfig()) as handle:
        yield handle


@pytest.fixture()
def make_emulator() -> Iterator[Callable[..., EmulatorHandle]]:
    started: list[EmulatorHandle] = []

    def make(**knobs: Any) -> EmulatorHandle:
        handle = run_emulator_in_thread(EmulatorConfig(**knobs))
        started.append(handle)
        return handle

    yield make
    for handle in started:
        handle.stop()


@pytest.fixture()
def kimi_emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    proc = start_emulator_process(
        EmulatorConfig(log_file=str(tmp_path / "emulator-requests.jsonl")), workdir=tmp_path / "emulator"
    )
    try:
        yield proc
    finally:
        proc.stop()
