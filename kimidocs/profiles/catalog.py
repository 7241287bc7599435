"""Where profiles are found, and loading one into a `DeclaredProfile`. Reads files, nothing else.

Search path: the folders in `KIMIDOCS_PROFILES` (os.pathsep-separated; default `./profiles`), then
the built-ins in `prompts/`. The first folder holding `<name>/profile.toml` wins; a user profile
named like a built-in shadows it, and `discover` reports that so the CLI can say so. The value of
`KIMIDOCS_PROFILES` comes from `kimidocs.run.settings.Settings.profiles_path` (nothing here reads the
environment), so a caller passes it in.

A built-in with a hand-written `system.md` (today: `summary`) is a *prompts* profile: it is listed
here, but loaded by `prompts.load_profile` as before, and its version is that loader's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from kimidocs.profiles.declaration import ProfileSpec, TaskSpec, parse_profile
from kimidocs.profiles.errors import DeclarationError
from kimidocs.profiles.prompt import folder_files, profile_version, render_stages, render_system, task_version
from kimidocs.profiles.schema import task_schema
from prompts import PROFILES_DIR, Profile, ProfileError, load_profile

ENV_VAR = "KIMIDOCS_PROFILES"
USER_DEFAULT = Path("profiles")
DECLARATION = "profile.toml"
Kind = Literal["declared", "prompts"]


@dataclass(frozen=True, slots=True)
class ProfileLocation:
    """One profile folder found on the search path.

    `shadows` lists same-named folders later on the path that this one hides (a user's `contract`
    hides the built-in one); `kind` is "prompts" for hand-written built-ins such as `summary`.
    """

    name: str
    folder: Path
    builtin: bool
    kind: Kind
    shadows: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class DeclaredProfile:
    """A loaded declaration with everything derived from it that does not depend on a document.

    `system` is shared by every task; `stages[task]` are that task's last-message templates;
    `task_versions[task]` changes only when what reaches the model for that task changes.
    """

    spec: ProfileSpec
    location: ProfileLocation
    version: str
    system: str
    task_versions: Mapping[str, str] = field(hash=False)
    stages: Mapping[str, Mapping[str, str]] = field(hash=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.spec.tasks

    def task(self, name: str) -> TaskSpec:
        return self.spec.task(name)

    def schema(self, task: str, *, partial: bool = False) -> dict[str, object]:
        return task_schema(self.spec, self.spec.task(task), partial=partial)

    def task_profile(self, task: str) -> Profile:
        """`task` as a `prompts.Profile`, so today's request builders (kimidocs.core.requests:
        chunk_request, reduce_request, pack_request, and results.repair_request) build its calls
        unchanged. Its `version` is the task version, its `system` the profile's shared one."""
        spec = self.spec.task(task)
        return Profile(
            name=self.spec.name,
            version=self.task_versions[task],
            system=self.system,
            tasks=MappingProxyType(dict(self.stages[task])),
            schema=MappingProxyType(self.schema(task)),
            max_output_tokens=spec.max_output_tokens,
            partial_output_tokens=spec.partial_output_tokens,
            description=spec.description or self.spec.description,
        )


# ------------------------------------------------------------------------------------------ search


def search_path(profiles_path: str | None = None, *, cwd: Path | None = None) -> tuple[Path, ...]:
    """User folders (from `profiles_path`, else ./profiles), then the built-ins; relative to `cwd`."""
    base = cwd or Path.cwd()
    entries = [e for e in (profiles_path or "").split(os.pathsep) if e.strip()]
    users = [Path(e).expanduser() for e in entries] or [USER_DEFAULT]
    return (*(u if u.is_absolute() else base / u for u in users), PROFILES_DIR)


def discover(path: Sequence[Path]) -> list[ProfileLocation]:
    """Every profile on `path`, by name; the first folder with a name wins and records what it hides."""
    found: dict[str, list[tuple[Path, bool, Kind]]] = {}
    for root in path:
        builtin = root.resolve() == PROFILES_DIR.resolve()
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name.startswith((".", "_")) or not (folder / DECLARATION).is_file():
                continue
            kind: Kind = "prompts" if builtin and (folder / "system.md").is_file() else "declared"
            found.setdefault(folder.name, []).append((folder, builtin, kind))
    out = []
    for name in sorted(found):
        (folder, builtin, kind), *hidden = found[name]
        out.append(ProfileLocation(name, folder, builtin, kind, tuple(h[0] for h in hidden)))
    return out


def locate(name: str, path: Sequence[Path]) -> ProfileLocation:
    """The folder `name` resolves to; `ProfileError` listing what exists when there is none."""
    known = discover(path)
    for loc in known:
        if loc.name == name:
            return loc
    where = ", ".join(str(p) for p in path)
    names = ", ".join(loc.name for loc in known) or "none"
    raise ProfileError(f"unknown profile {name!r} (searched {where}); available: {names}")


# ------------------------------------------------------------------------------------------ loading


def load_declared(name: str, path: Sequence[Path]) -> DeclaredProfile:
    """The declared profile `name` from `path`; `ProfileError` when unknown, hand-written, or malformed."""
    loc = locate(name, path)
    if loc.kind == "prompts":
        raise ProfileError(
            f"profile {name!r} is hand-written ({loc.folder}); load it with prompts.load_profile"
        )
    return load_folder(loc.folder, location=loc)


def load_folder(folder: Path, *, location: ProfileLocation | None = None) -> DeclaredProfile:
    """A profile folder (or its profile.toml) read and derived; `DeclarationError` names file and key."""
    folder = Path(folder)
    if folder.name == DECLARATION and folder.is_file():
        folder = folder.parent
    file = folder / DECLARATION
    if not file.is_file():
        raise DeclarationError(file, "", "not found (a profile is a folder holding profile.toml)")
    files = folder_files(folder)
    try:
        text = files[DECLARATION].decode("utf-8")
    except UnicodeDecodeError as err:
        raise DeclarationError(file, "", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    spec = parse_profile(text, name=folder.name, file=file)
    loc = location or ProfileLocation(spec.name, folder, builtin=False, kind="declared")
    return DeclaredProfile(
        spec=spec,
        location=loc,
        version=profile_version(files),
        system=render_system(spec),
        task_versions=MappingProxyType({t.name: task_version(spec, t) for t in spec.tasks}),
        stages=MappingProxyType({t.name: MappingProxyType(render_stages(spec, t)) for t in spec.tasks}),
    )


def version_of(loc: ProfileLocation) -> str:
    """The version a listing shows: the declared profile's, or `prompts.load_profile`'s."""
    if loc.kind == "prompts":
        return load_profile(loc.name).version
    return load_folder(loc.folder, location=loc).version


# ------------------------------------------------------------------------------------------ runs


def planning_profile(declared: DeclaredProfile) -> Profile:
    """One `prompts.Profile` that plans a document for every task of `declared` at once.

    The tasks share the system and the document message, so one plan (chunks, reduce groups)
    serves them all: it is sized for the largest task text of each stage and the largest output.
    Its version is the profile's. Calls are built from `declared.task_profile(task)`.
    """
    specs = declared.tasks
    stages = {
        stage: max((declared.stages[t.name][stage] for t in specs), key=len)
        for stage in next(iter(declared.stages.values()))
    }
    return Profile(
        name=declared.name,
        version=declared.version,
        system=declared.system,
        tasks=MappingProxyType(stages),
        schema=MappingProxyType({}),
        max_output_tokens=max(t.max_output_tokens for t in specs),
        partial_output_tokens=max(t.partial_output_tokens for t in specs),
        description=declared.spec.description,
    )


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    """What a run asked for by name: the profile that plans its documents, the declaration when it
    is a declared one (None for a hand-written built-in such as `summary`), and where it was found."""

    profile: Profile
    declared: DeclaredProfile | None
    location: ProfileLocation

    @property
    def shadow_note(self) -> str | None:
        """One line when this profile hides a same-named one later on the search path."""
        loc = self.location
        if not loc.shadows:
            return None
        hidden = ", ".join(str(p) for p in loc.shadows)
        return f"profile {loc.name!r} from {loc.folder} shadows {hidden}"


def resolve(name: str, path: Sequence[Path]) -> ResolvedProfile:
    """`name` on the search path: a declared profile (user or built-in) or a hand-written built-in.

    Raises `ProfileError` (unknown, malformed; a `DeclarationError` names the file and the key).
    """
    loc = locate(name, path)
    if loc.kind == "prompts":
        return ResolvedProfile(load_profile(name), None, loc)
    declared = load_folder(loc.folder, location=loc)
    return ResolvedProfile(planning_profile(declared), declared, loc)
