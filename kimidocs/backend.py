"""Which Kimi the run talks to: the real service (a key is set) or the local emulator (no key).

Never a silent fallback: without `KIMI_API_KEY` the emulator is started on purpose, the CLI
says so on screen, and every row the run writes carries `backend = 'emulator'`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimidocs.kimi.client import KimiClient, is_loopback
from kimidocs.kimi.limits import Limiter
from kimidocs.settings import Settings

is_loopback_url = is_loopback  # True when a URL points at this machine (an emulator, never the service)

EMULATOR = "emulator"
KIMI = "kimi"


@dataclass
class Backend:
    """An open client plus what it is, for labelling rows and closing what we started."""

    client: KimiClient
    name: str
    base_url: str
    started_emulator: Any = field(default=None, repr=False)

    def close(self) -> None:
        self.client.close()
        if self.started_emulator is not None:
            self.started_emulator.stop()


def open_backend(settings: Settings, *, limiter: Limiter | None = None) -> Backend:
    """A client for the configured service, or an in-process emulator when no key is set."""
    key = settings.api_key_value()
    common = {
        "timeout_s": settings.request_timeout_s,
        "max_retries": settings.max_retries,
        "limiter": limiter,
    }
    if key:
        name = EMULATOR if is_loopback(settings.kimi_base_url) else KIMI
        client = KimiClient(settings.kimi_base_url, key, **common)
        return Backend(client=client, name=name, base_url=settings.kimi_base_url)
    from kimidocs.kimi.emulator import EmulatorConfig, run_emulator_in_thread

    handle = run_emulator_in_thread(EmulatorConfig())
    client = KimiClient(handle.base_url, handle.api_key, **common)
    return Backend(client=client, name=EMULATOR, base_url=handle.base_url, started_emulator=handle)
