"""`kimidocs emulator`: serve the local Kimi-compatible emulator until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

Opt = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("emulator")
    def emulator(
        host: Annotated[str, Opt(help="Interface to listen on (keep it on loopback).")] = "127.0.0.1",
        port: Annotated[int, Opt(help="Port; 0 picks a free one.")] = 8765,
        api_key: Annotated[str, Opt(help="The key clients must send as Bearer token.")] = "sk-emulator",
        tier: Annotated[
            str | None, Opt(help="Moonshot rate-limit tier: tier0 .. tier5 (default: unlimited).")
        ] = None,
        concurrency: Annotated[int | None, Opt(help="Max concurrent requests (overrides the tier).")] = None,
        rpm: Annotated[int | None, Opt(help="Requests per minute (overrides the tier).")] = None,
        tpm: Annotated[
            int | None, Opt(help="Tokens per minute, prompt + max_tokens (overrides the tier).")
        ] = None,
        tpd: Annotated[int | None, Opt(help="Tokens per day (overrides the tier).")] = None,
        time_scale: Annotated[
            float, Opt(help="Length of an emulated second (0.01: a minute lasts 0.6 s).")
        ] = 1.0,
        latency_ms: Annotated[float, Opt(help="Delay before the first byte of an answer.")] = 0.0,
        latency_per_token_ms: Annotated[float, Opt(help="Extra delay per output token.")] = 0.0,
        error_5xx_rate: Annotated[float, Opt(help="Share of chat calls answered 500/502/503.")] = 0.0,
        overloaded_rate: Annotated[float, Opt(help="Share answered 429 engine_overloaded_error.")] = 0.0,
        drop_connection_rate: Annotated[
            float, Opt(help="Share whose connection is closed, no answer.")
        ] = 0.0,
        truncate_stream_rate: Annotated[float, Opt(help="Share of streams ending before [DONE].")] = 0.0,
        length_rate: Annotated[float, Opt(help="Share cut short with finish_reason length.")] = 0.0,
        invalid_json_rate: Annotated[float, Opt(help="Share whose content is broken JSON.")] = 0.0,
        timeout_rate: Annotated[float, Opt(help="Share that stall for --timeout-sleep-s.")] = 0.0,
        timeout_sleep_s: Annotated[float, Opt(help="How long a stalled answer waits.")] = 600.0,
        seed: Annotated[int, Opt(help="Seed of the fault generator.")] = 0,
        token_ratio: Annotated[float, Opt(help="Emulated Kimi tokens per o200k token.")] = 1.04,
        cache_block: Annotated[int, Opt(help="Prefix-cache block size in tokens.")] = 256,
        cache_ttl_s: Annotated[float | None, Opt(help="Prefix-cache TTL in emulated seconds.")] = None,
        log: Annotated[
            Path | None, Opt("--log", help="Append every request to this JSON Lines file.")
        ] = None,
        set_: Annotated[
            list[str] | None, Opt("--set", help="Any other knob as NAME=JSON_VALUE (repeatable).")
        ] = None,
        config_json: Annotated[
            str | None,
            Opt(hidden=True, envvar="KIMIDOCS_EMULATOR_CONFIG", help="Full EmulatorConfig as JSON."),
        ] = None,
        ready_file: Annotated[
            Path | None, Opt(hidden=True, help="Write {base_url} here once listening.")
        ] = None,
        quiet: Annotated[bool, Opt(hidden=True)] = False,
    ) -> None:
        """Serve the Kimi-compatible emulator (test and demo backend; its output is marked as emulated).

        Point kimidocs at it with KIMI_BASE_URL=http://HOST:PORT/v1 and KIMI_API_KEY=<--api-key>.
        Knobs can be changed while it runs: POST /_emulator/config {"latency_ms": 100}; the request log
        is at GET /_emulator/requests.
        """
        from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread

        knobs: dict[str, Any] = json.loads(config_json) if config_json else {}
        if not config_json:
            knobs.update(
                api_key=api_key,
                tier=tier,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                tpd=tpd,
                time_scale=time_scale,
                latency_ms=latency_ms,
                latency_per_token_ms=latency_per_token_ms,
                error_5xx_rate=error_5xx_rate,
                overloaded_rate=overloaded_rate,
                drop_connection_rate=drop_connection_rate,
                truncate_stream_rate=truncate_stream_rate,
                length_rate=length_rate,
                invalid_json_rate=invalid_json_rate,
                timeout_rate=timeout_rate,
                timeout_sleep_s=timeout_sleep_s,
                seed=seed,
                token_ratio=token_ratio,
                cache_block=cache_block,
                cache_ttl_s=cache_ttl_s,
            )
        if log is not None:
            knobs["log_file"] = str(log)
        for item in set_ or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"--set expects NAME=VALUE, got {item!r}")
            try:
                knobs[name.strip()] = json.loads(value)
            except ValueError:
                knobs[name.strip()] = value
        try:
            config = EmulatorConfig.model_validate(knobs)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None

        handle = run_emulator_in_thread(config, host=host, port=port)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"base_url": handle.base_url, "pid": os.getpid()}))
            tmp.replace(ready_file)
        if not quiet:
            limits = config.tier or "unlimited"
            typer.echo(f"Kimi emulator listening on {handle.base_url}  (limits: {limits}; Ctrl-C stops it)")
            typer.echo("Point kimidocs at it:")
            typer.echo(f"  export KIMI_BASE_URL={handle.base_url}")
            typer.echo(f"  export KIMI_API_KEY={config.api_key}")
            typer.echo("Output produced with it is emulated (backend = 'emulator'), never real Kimi output.")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            handle.stop()
