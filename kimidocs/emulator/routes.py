"""The emulator's routes: the chat path (app.py), the Batch API built on it (batches.py), the control
plane. Kept apart from both so neither imports the other's module back."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kimidocs.emulator.app import Emulator, EmulatorApp
from kimidocs.emulator.batches import BatchApi
from kimidocs.emulator.knobs import EmulatorConfig
from kimidocs.emulator.state import EmulatorState


def create_app(config: EmulatorConfig | None = None, state: EmulatorState | None = None) -> Starlette:
    """The ASGI app. `app.state.emulator` is the `EmulatorState` (for in-process handles)."""
    state = state or EmulatorState(config or EmulatorConfig())
    emu = Emulator(state)

    def simple(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await emu.simple(request, handler)

        return endpoint

    batch = BatchApi(emu)
    routes = [
        Route("/v1/chat/completions", emu.chat, methods=["POST"]),
        Route("/v1/files", simple(batch.upload), methods=["POST"]),
        Route("/v1/files", simple(batch.list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", simple(batch.get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", simple(batch.delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", simple(batch.file_content), methods=["GET"]),
        Route("/v1/batches", simple(batch.create), methods=["POST"]),
        Route("/v1/batches", simple(batch.list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}", simple(batch.get_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", simple(batch.cancel), methods=["POST"]),
        Route("/v1/tokenizers/estimate-token-count", simple(emu.estimate), methods=["POST"]),
        Route("/v1/models", simple(emu.models), methods=["GET"]),
        Route("/v1/users/me/balance", simple(emu.balance), methods=["GET"]),
        Route("/_emulator/config", emu.control_config, methods=["GET", "POST"]),
        Route("/_emulator/fail_next", emu.control_fail_next, methods=["POST"]),
        Route("/_emulator/requests", emu.control_requests, methods=["GET"]),
        Route("/_emulator/reset", emu.control_reset, methods=["POST"]),
        Route("/_emulator/stats", emu.control_stats, methods=["GET"]),
        Route("/v1/{rest:path}", emu.not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    app = EmulatorApp(routes=routes)
    app.state.emulator = state
    return app
