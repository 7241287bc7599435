"""`kimidocs models`: the account's models (GET /models) beside kimidocs' own model table.

Model ids differ per account and get retired (kimi-api.md §0), so this answers "can I run model X, and do
we know its window and prices?" before a run, not after a 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kimidocs.core.models import MODELS, ModelInfo
from kimidocs.emulator.knobs import DEFAULT_API_KEY
from kimidocs.kimi.client import KimiClient, is_loopback
from kimidocs.kimi.errors import KimiError, UnexpectedResponse
from kimidocs.run.settings import load_settings


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of the listing. `on_account` is None when the account was not asked."""

    id: str
    on_account: bool | None
    info: ModelInfo | None
    account_window: int | None = None


def build_rows(
    account: list[dict[str, Any]] | None,
    *,
    show_all: bool = False,
    declared: Mapping[str, ModelInfo] | None = None,
) -> list[ModelRow]:
    """Our table joined to the account's list: ours first (table order, then the models declared in
    KIMIDOCS_MODELS_FILE), then ids only the account has."""
    listed = {str(m["id"]): m for m in account or [] if m.get("id")}
    known = {**MODELS, **(declared or {})}
    rows = []
    for model_id, info in known.items():
        if info.test_only and not show_all and model_id not in listed:
            continue
        rows.append(ModelRow(model_id, (model_id in listed) if account is not None else None, info))
    for model_id in sorted(set(listed) - set(known)):
        window = listed[model_id].get("context_length")
        rows.append(ModelRow(model_id, True, None, window if isinstance(window, int) else None))
    return rows


def _note(row: ModelRow) -> str:
    if row.info is None:
        return "[yellow]unknown to kimidocs: no plan/price[/yellow]"
    if row.info.test_only:
        return "emulator only"
    if not row.info.kimi:
        return "declared (KIMIDOCS_MODELS_FILE)"
    if row.info.retired:
        return "reported retired"
    if row.info.retires:  # retired or retiring on a date: say when, and where runs without a choice go
        verb = "retired" if row.info.retires <= date.today().isoformat() else "retires"
        then = f" -> {row.info.successor}" if row.info.successor else ""
        return f"{verb} {row.info.retires}{then}"
    return ""


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("[green]yes[/green]" if value else "[red]no[/red]")


def render(rows: list[ModelRow], *, asked: bool) -> Table:
    table = Table(title="Kimi models", title_justify="left")
    table.add_column("model", style="bold", no_wrap=True)
    if asked:
        table.add_column("on account")
    table.add_column("in table")
    table.add_column("window", justify="right", no_wrap=True)
    table.add_column("$/1M hit/miss/out", justify="right", no_wrap=True)
    table.add_column("img")
    table.add_column("note")
    for row in rows:
        info = row.info
        window = info.window if info else row.account_window
        prices = (
            "/".join(f"{p:.2f}" for p in (info.price_cache_hit, info.price_cache_miss, info.price_output))
            if info
            else "?"
        )
        cells = [
            row.id,
            *([_yes_no(row.on_account)] if asked else []),
            _yes_no(info is not None),
            f"{window:,}" if window else "?",
            prices,
            ("yes" if info.images else "no") if info else "?",
            _note(row),
        ]
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    """Add `kimidocs models`."""

    @app.command("models")
    def models(
        base_url: Annotated[
            str | None,
            typer.Option("--base-url", help="API base URL (default: KIMI_BASE_URL or the service)."),
        ] = None,
        show_all: Annotated[bool, typer.Option("--all", help="Also show emulator-only test models.")] = False,
    ) -> None:
        """List the account's models beside kimidocs' table (window, prices, images)."""
        console = Console()
        settings = load_settings(kimi_base_url=base_url)
        key = settings.api_key_value()
        account: list[dict[str, Any]] | None = None
        failed = False
        if key is None and base_url is None:
            console.print(
                "[yellow]No KIMI_API_KEY set and no --base-url: showing kimidocs' model table only. "
                "Set KIMI_API_KEY (or pass --base-url of an emulator) to list the account's models.[/yellow]"
            )
        else:
            # A local emulator needs its own key: without KIMI_API_KEY, a loopback URL gets the emulator's
            # default key (no secret), and the answer must come from an emulator that says it is one.
            local = key is None and is_loopback(settings.kimi_base_url)
            try:
                with KimiClient(
                    settings.kimi_base_url,
                    DEFAULT_API_KEY if local else key,
                    max_retries=2,
                    timeout_s=30.0,
                ) as client:
                    info = client.probe()
                    account = list(info.models) if not local or info.emulator else None
                if account is None:
                    raise UnexpectedResponse(
                        f"{settings.kimi_base_url} is not a kimidocs emulator: set KIMI_API_KEY for it"
                    )
                console.print(f"{len(account)} models on the account at {settings.kimi_base_url}")
            except KimiError as error:
                failed = True
                console.print(f"[red]Could not list the account's models: {error}[/red]")
        console.print(
            render(
                build_rows(account, show_all=show_all, declared=settings.declared_models()),
                asked=account is not None,
            )
        )
        if failed:
            raise typer.Exit(1)
