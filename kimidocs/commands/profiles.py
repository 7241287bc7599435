"""`kimidocs profiles list|show|check|new`: the profiles users declare, seen and checked before a run.

Every mistake (an unknown profile, a malformed profile.toml, a folder that exists) is one line and
exit 2 through `ConfigError`; a malformed declaration names its file and key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kimidocs.core import markup, tokens
from kimidocs.core.models import DEFAULT_MODEL, get_model
from kimidocs.core.records import Stage
from kimidocs.core.requests import build_request
from kimidocs.profiles import (
    DeclaredProfile,
    FieldSpec,
    ProfileError,
    ProfileLocation,
    discover,
    load_folder,
    locate,
    search_path,
    version_of,
    views_of,
)
from kimidocs.profiles.catalog import DECLARATION, USER_DEFAULT
from kimidocs.profiles.declaration import parse_profile
from kimidocs.profiles.starter import starter_profile
from kimidocs.run.settings import ConfigError, load_settings

SAMPLE_PAGES = {
    1: "MASTER SERVICES AGREEMENT\nThis Agreement is made on 5 January 2024 between Acme GmbH (the Supplier) "
    "and Beta Ltd (the Customer).",
    2: "The Customer shall pay EUR 12,000 per year, invoiced quarterly, net 30 days. This Agreement is "
    "governed by the laws of Germany.",
}


def _path() -> tuple[Path, ...]:
    return search_path(load_settings().profiles_path)


def _where(loc: ProfileLocation) -> str:
    return f"built-in ({loc.folder.name})" if loc.builtin else str(loc.folder)


def _shadow_note(loc: ProfileLocation) -> str:
    if not loc.shadows:
        return ""
    hidden = ", ".join("the built-in" if _is_builtin(p) else str(p) for p in loc.shadows)
    return f"shadows {hidden}"


def _is_builtin(folder: Path) -> bool:
    from prompts import PROFILES_DIR

    return folder.parent.resolve() == PROFILES_DIR.resolve()


def _type_label(f: FieldSpec) -> str:
    if f.type == "enum":
        return "enum(" + ", ".join(f.values) + ")"
    if f.is_list and f.fields:
        return "list of objects"
    if f.is_list and f.items is not None:
        return f"list of {_type_label(f.items)}"
    return f.type


def _load(loc: ProfileLocation) -> DeclaredProfile:
    try:
        return load_folder(loc.folder, location=loc)
    except ProfileError as err:
        raise ConfigError(str(err)) from None


def register(app: typer.Typer) -> None:
    """Add `kimidocs profiles ...`."""
    profiles = typer.Typer(help="Profiles: what to ask about each document (list, show, check, new).")
    app.add_typer(profiles, name="profiles")

    @profiles.command("list")
    def list_profiles() -> None:
        """Every profile on the search path: where it was found, its version, what it shadows."""
        path = _path()
        console = Console(highlight=False, soft_wrap=True)
        table = Table(title="Profiles", title_justify="left")
        for column in ("name", "kind", "where", "version", "tasks", "note"):
            table.add_column(column, no_wrap=column in ("name", "version"))
        for loc in discover(path):
            note, tasks = _shadow_note(loc), "summary"
            try:
                version = version_of(loc)
                if loc.kind == "declared":
                    tasks = ", ".join(load_folder(loc.folder, location=loc).spec.task_names)
            except ProfileError as err:
                version, tasks, note = "[red]invalid[/red]", "", escape(str(err))
            table.add_row(loc.name, loc.kind, escape(_where(loc)), version, tasks, note)
        console.print(table)
        console.print("search path: " + escape(" → ".join(str(p) for p in path)))

    @profiles.command("show")
    def show(name: Annotated[str, typer.Argument(help="Profile name, e.g. contract.")]) -> None:
        """A profile's tasks, fields, versions and the columns of its typed views."""
        try:
            loc = locate(name, _path())
        except ProfileError as err:
            raise ConfigError(str(err)) from None
        console = Console(highlight=False, soft_wrap=True)
        if loc.kind == "prompts":
            version = version_of(loc)
            console.print(
                f"[bold]{name}[/bold] {version} — hand-written built-in ({escape(str(loc.folder))})"
            )
            console.print("One task; its schema is schema.json; results go to `summaries` (docs/SCHEMA.md).")
            return
        profile = _load(loc)
        console.print(f"[bold]{name}[/bold] version {profile.version} — {escape(_where(loc))}")
        if note := _shadow_note(loc):
            console.print(f"[yellow]{escape(note)}[/yellow]")
        if profile.spec.description:
            console.print(escape(profile.spec.description))
        views = views_of(profile).views
        for task in profile.tasks:
            console.print(
                f"\n[bold]task {task.name}[/bold] version {profile.task_versions[task.name]}: "
                f"{escape(task.instructions)}"
            )
            fields = Table(show_header=True, box=None, pad_edge=False)
            for column in ("field", "type", "cite", "required", "description"):
                fields.add_column(column)
            for f in task.fields:
                _field_rows(fields, f, "")
            console.print(fields)
            for view in views:
                if view.task == task.name:
                    cols = ", ".join(f"{c} {t}" for c, t in view.columns)
                    console.print(f"  view [cyan]{view.name}[/cyan]: {escape(cols)}")

    @profiles.command("check")
    def check(
        path: Annotated[Path, typer.Argument(help="A profile folder or its profile.toml.")],
        model: Annotated[
            str, typer.Option("--model", help="Model id for the example request.")
        ] = DEFAULT_MODEL,
    ) -> None:
        """Validate a profile and print the request its first task sends for a tiny sample document."""
        try:
            profile = load_folder(path)
            views = views_of(profile)
            info = get_model(model, load_settings().declared_models())
        except (ProfileError, KeyError, ValueError) as err:
            raise ConfigError(str(err).strip("'\"")) from None
        first = profile.tasks[0]
        task_profile = profile.task_profile(first.name)
        content = "\n".join(markup.page_block(n, text) for n, text in SAMPLE_PAGES.items())
        text = task_profile.task("task", total_pages=len(SAMPLE_PAGES))
        request = build_request(
            task_profile,
            info,
            content,
            text,
            stage=Stage.SINGLE,
            max_tokens=first.max_output_tokens,
            content_tokens=tokens.count(content),
        )
        console = Console(highlight=False, soft_wrap=True)
        tasks = ", ".join(f"{t.name} ({profile.task_versions[t.name]})" for t in profile.tasks)
        console.print(f"[green]ok[/green] {escape(str(path))}: version {profile.version}; tasks: {tasks}")
        console.print(f"views: {', '.join(views.names)}")
        console.print(
            f"Example request of task {first.name!r} for a {len(SAMPLE_PAGES)}-page sample "
            f"(~{request.prompt_tokens_est} prompt tokens):"
        )
        typer.echo(json.dumps(dict(request.body), ensure_ascii=False, indent=2))

    @profiles.command("new")
    def new(
        name: Annotated[str, typer.Argument(help="Name of the new profile (lower-case, digits, _).")],
        directory: Annotated[
            Path, typer.Option("--dir", help="Folder to create the profile in.")
        ] = USER_DEFAULT,
    ) -> None:
        """Write a commented starter profile to ./profiles/NAME/profile.toml."""
        folder = directory / name
        text = starter_profile(name)
        try:
            parse_profile(text, name=name, file=folder / DECLARATION)
        except ProfileError as err:
            raise ConfigError(str(err)) from None
        if folder.exists():
            raise ConfigError(f"{folder} already exists; pick another name or edit it")
        folder.mkdir(parents=True)
        (folder / DECLARATION).write_text(text, encoding="utf-8")
        console = Console(highlight=False, soft_wrap=True)
        console.print(f"created {escape(str(folder / DECLARATION))}")
        path = _path()
        if not any(p.resolve() == directory.resolve() for p in path):
            console.print(
                f"[yellow]{escape(str(directory))} is not on the search path (KIMIDOCS_PROFILES); "
                "add it there to use this profile.[/yellow]"
            )
        console.print(f"check it with: kimidocs profiles check {escape(str(folder))}")


def _field_rows(table: Table, f: FieldSpec, indent: str) -> None:
    table.add_row(
        indent + f.name,
        _type_label(f),
        "yes" if f.cite else "",
        "yes" if f.required else "",
        escape(f.description),
    )
    for sub in f.fields:
        _field_rows(table, sub, indent + "  ")
