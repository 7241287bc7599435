"""A Kimi-compatible HTTP server for tests and demos (DESIGN §5); never a silent fallback for Kimi.

Start it in-process with `run_emulator_in_thread(EmulatorConfig(...))`, as its own process with
`start_emulator_process(...)`, or from the shell with `kimidocs emulator`. Default API key: `sk-emulator`.

    app.py      the chat path and the control plane           routes.py  every route, the Batch API's too
    batches.py  the Batch API (files, batches, workers)        command.py `kimidocs emulator`
    prompt.py   body -> messages, counts, token sequence      cache.py   prefix cache in blocks
    limits.py   concurrency / RPM / TPM / TPD                  state.py   knobs, faults, request log
    answers.py  deterministic answers from the input           extract.py markers, sentences, names...
    knobs.py    EmulatorConfig, tiers                          runner.py  thread / process runners
"""

from kimidocs.emulator.knobs import DEFAULT_API_KEY, TIERS, EmulatorConfig
from kimidocs.emulator.routes import create_app
from kimidocs.emulator.runner import (
    EmulatorHandle,
    EmulatorProcess,
    EmulatorStartError,
    run_emulator_in_thread,
    start_emulator_process,
)
from kimidocs.emulator.state import FAULT_KINDS, EmulatorState

__all__ = [
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "TIERS",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorProcess",
    "EmulatorStartError",
    "EmulatorState",
    "create_app",
    "run_emulator_in_thread",
    "start_emulator_process",
]
