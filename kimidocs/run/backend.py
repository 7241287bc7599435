"""Which server the run talks to, labelled from what answers (never from the address alone).

- `kimi`: Moonshot's service, directly (its hosts) or through a gateway or tunnel whose models are all
  Moonshot's;
- `emulator`: the project's emulator, which says so in a response header (started in-process when no
  key is set, or any loopback/remote URL that turns out to be one);
- `openai-compatible`: anything else speaking the same API (a local model server, a proxy).

Never a silent fallback: without `KIMI_API_KEY` the emulator is started on purpose, the CLI says so on
screen, and every row the run writes carries `backend = 'emulator'`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from kimidocs.core.responses import ServerInfo
from kimidocs.kimi.client import KimiClient, is_loopback
from kimidocs.kimi.errors import KimiError
from kimidocs.kimi.limits import Limiter, RateLimiter, RateLimits
from kimidocs.run.settings import ConfigError, Settings

log = logging.getLogger(__name__)

is_loopback_url = is_loopback  # True when a URL points at this machine (an emulator, never the service)

EMULATOR = "emulator"
KIMI = "kimi"
OPENAI_COMPATIBLE = "openai-compatible"
MOONSHOT_HOSTS = ("api.moonshot.cn", "api.moonshot.ai")


@dataclass
class Backend:
    """An open client plus what it is, for labelling rows and closing what we started."""

    client: KimiClient
    name: str
    base_url: str
    started_emulator: Any = field(default=None, repr=False)
    offered: tuple[str, ...] | None = None  # the server's model ids, when it answered GET /models

    @property
    def emulated_here(self) -> bool:
        """This process started the emulator because no key was set."""
        return self.started_emulator is not None

    def close(self) -> None:
        self.client.close()
        if self.started_emulator is not None:
            self.started_emulator.stop()


def run_limiter(settings: Settings) -> Limiter:
    """The limiter of a run's calls: shared through Redis when KIMIDOCS_LIMITS_URL names one (every
    worker of the account together), else this process's own."""
    scale = settings.limits_time_scale
    if settings.limits_url is not None:
        from kimidocs.kimi.redis_limits import RedisLimiter

        limiter = RedisLimiter(
            RateLimits.for_tier(settings.tier), settings.limits_url.get_secret_value(), time_scale=scale
        )
        try:
            limiter.ping()
        except ConnectionError as err:  # one line and exit 2, before a run exists (issue 22.2)
            raise ConfigError(f"KIMIDOCS_LIMITS_URL: cannot reach {err}") from None
        return limiter
    return RateLimiter.for_tier(settings.tier, time_scale=scale)


def open_backend(settings: Settings, *, limiter: Limiter | None = None) -> Backend:
    """A client for the configured service, or an in-process emulator when no key is set."""
    key = settings.api_key_value()

    def client_for(base_url: str, api_key: str) -> KimiClient:
        return KimiClient(
            base_url,
            api_key,
            timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
            limiter=limiter,
        )

    if key:
        client = client_for(settings.kimi_base_url, key)
        info = _probe(client)
        name = label(settings.kimi_base_url, info)
        return Backend(client, name, settings.kimi_base_url, offered=info.model_ids if info else None)
    from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread

    handle = run_emulator_in_thread(EmulatorConfig())
    client = client_for(handle.base_url, handle.api_key)
    info = _probe(client)
    return Backend(client, EMULATOR, handle.base_url, handle, offered=info.model_ids if info else None)


def label(base_url: str, info: ServerInfo | None) -> str:
    """`emulator` when it says so; `kimi` on Moonshot's hosts or when every model is Moonshot's (a gateway
    or tunnel in front of the service); else `openai-compatible`."""
    if info is not None and info.emulator:
        return EMULATOR
    host = (urlsplit(base_url).hostname or "").lower()
    if host in MOONSHOT_HOSTS:
        return KIMI
    if info is not None and info.owners == ("moonshot",):
        return KIMI
    return OPENAI_COMPATIBLE


def _probe(client: KimiClient) -> ServerInfo | None:
    """The server's answer to GET /models, or None when it gives none (the calls will say why)."""
    try:
        return client.probe()
    except KimiError as err:
        log.debug("GET /models failed (%s): labelling by address, model not checked", err)
        return None


# ---------------------------------------------------------------------- the key policy of unattended runs


class EmulatorNotAllowed(RuntimeError):
    """A deployment run without KIMI_API_KEY: fail fast instead of quietly summarising with the emulator."""


def require_backend(settings: Settings) -> None:
    """A worker needs KIMI_API_KEY, unless it is told the emulator is fine.

    The CLI falls back to the emulator on purpose and says so on screen; an unattended worker has no
    screen, so a forgotten key must stop the run at once instead of filling the DB with emulated rows.
    Allowed without a key: KIMIDOCS_ALLOW_EMULATOR=1, or KIMI_BASE_URL on loopback (a local emulator).
    """
    if settings.api_key_value() or is_loopback_url(settings.kimi_base_url):
        return
    if settings.allow_emulator:
        return
    raise EmulatorNotAllowed(
        "KIMI_API_KEY is not set in this worker's environment. Set KIMI_API_KEY (e.g. in the worker's "
        "environment or the work pool's job variables), or set KIMIDOCS_ALLOW_EMULATOR=1 to run against "
        "the built-in Kimi emulator (rows are marked backend='emulator')."
    )


def with_key_from_secret(settings: Settings, load_secret: Callable[[str], str]) -> Settings:
    """KIMI_API_KEY from the environment or `.env`, else `load_secret(KIMIDOCS_PREFECT_SECRET_BLOCK)` (the
    Prefect shell passes its Secret block loader: a work pool's workers then need no key of their own)."""
    if settings.api_key_value() or not settings.prefect_secret_block:
        return settings
    value = load_secret(settings.prefect_secret_block)
    return settings.model_copy(update={"kimi_api_key": SecretStr(str(value))})
