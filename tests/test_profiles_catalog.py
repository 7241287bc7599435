"""Search path and shadowing, the built-ins, versions per task, and the bridge to today's requests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kimidocs.core.models import get_model
from kimidocs.core.records import Stage
from kimidocs.core.requests import build_request
from kimidocs.profiles import (
    DeclarationError,
    ProfileError,
    answer_model,
    discover,
    load_declared,
    load_folder,
    locate,
    search_path,
    version_of,
    views_of,
)
from kimidocs.profiles.prompt import templates
from prompts import PROFILES_DIR, available_profiles, load_profile

MINI = """
instructions = "shared words"
[[tasks]]
name = "a"
instructions = "task a"
fields = {x = "string"}
[[tasks]]
name = "b"
instructions = "task b"
fields = {y = {type = "date", cite = true}}
"""


def write(folder: Path, text: str = MINI) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.toml").write_text(text, encoding="utf-8")
    return folder


def test_search_path_defaults_to_dot_profiles_then_builtins(tmp_path: Path) -> None:
    assert search_path(None, cwd=tmp_path) == (tmp_path / "profiles", PROFILES_DIR)
    one, two = tmp_path / "one", Path("rel")
    value = os.pathsep.join([str(one), "", str(two)])
    assert search_path(value, cwd=tmp_path) == (one, tmp_path / "rel", PROFILES_DIR)


def test_builtins_are_listed_with_summary_unchanged(tmp_path: Path) -> None:
    found = {loc.name: loc for loc in discover(search_path(None, cwd=tmp_path))}
    assert {"summary", "contract", "report"} <= set(found)
    assert found["summary"].kind == "prompts" and found["contract"].kind == "declared"
    assert all(loc.builtin and not loc.shadows for loc in found.values())
    # the hand-written profile keeps its loader and its version; _declared is no profile
    assert available_profiles() == ["summary"]
    assert version_of(found["summary"]) == load_profile("summary").version
    with pytest.raises(ProfileError, match="hand-written"):
        load_declared("summary", search_path(None, cwd=tmp_path))
    with pytest.raises(ProfileError, match="unknown profile '_declared'"):
        load_profile("_declared")


@pytest.mark.parametrize("name", ["contract", "report"])
def test_builtin_declarations_load_with_2_to_5_cited_tasks(tmp_path: Path, name: str) -> None:
    profile = load_declared(name, search_path(None, cwd=tmp_path))
    assert 2 <= len(profile.tasks) <= 5
    for task in profile.tasks:
        assert any(f.cite for f in task.fields), task.name
        answer_model(task)  # derivable
    assert views_of(profile).names[0] == f"profile_{name}_{profile.tasks[0].name}"


def test_contract_covers_what_the_issue_asks() -> None:
    profile = load_folder(PROFILES_DIR / "contract")
    fields = {f.name for t in profile.tasks for f in t.fields}
    for wanted in (
        "parties",
        "effective_date",
        "term",
        "renewal",
        "termination_rights",
        "governing_law",
        "payment_terms",
        "amounts",
        "obligations",
        "risky_clauses",
    ):
        assert wanted in fields
    parties = profile.task("parties").field("parties")
    assert parties.cite and "role" in {f.name for f in parties.fields}


def test_report_metrics_have_value_unit_period_and_pages() -> None:
    metrics = load_folder(PROFILES_DIR / "report").task("metrics").field("metrics")
    assert metrics.cite and {"value", "unit", "period"} <= {f.name for f in metrics.fields}
    fields = {f.name for t in load_folder(PROFILES_DIR / "report").tasks for f in t.fields}
    assert {"findings", "recommendations", "period_start", "period_end"} <= fields


def test_a_user_profile_shadows_a_builtin_and_says_so(tmp_path: Path) -> None:
    user, team = tmp_path / "mine", tmp_path / "team"
    write(user / "contract")
    write(team / "contract")
    write(team / "extra")
    path = search_path(os.pathsep.join([str(user), str(team)]), cwd=tmp_path)
    loc = locate("contract", path)
    assert loc.folder == user / "contract" and not loc.builtin
    assert loc.shadows == (team / "contract", PROFILES_DIR / "contract")
    assert load_declared("contract", path).spec.task_names == ("a", "b")
    assert locate("extra", path).shadows == ()
    assert locate("report", path).builtin


def test_an_unknown_profile_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'nope' \(searched .*\); available: .*contract"):
        locate("nope", search_path(None, cwd=tmp_path))


def test_a_malformed_user_profile_names_its_file(tmp_path: Path) -> None:
    folder = write(tmp_path / "profiles" / "bad", MINI.replace('"string"', '"strin"'))
    with pytest.raises(DeclarationError) as info:
        load_declared("bad", search_path(None, cwd=tmp_path))
    assert info.value.file == str(folder / "profile.toml")
    assert info.value.key == "tasks.a.fields.x.type"
    (folder / "profile.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(DeclarationError, match="not UTF-8"):
        load_folder(folder)
    with pytest.raises(DeclarationError, match="not found"):
        load_folder(tmp_path / "empty")


def test_editing_one_task_changes_only_its_version(tmp_path: Path) -> None:
    before = load_folder(write(tmp_path / "p"))
    after_a = load_folder(write(tmp_path / "p", MINI.replace("task a", "task a, better")))
    assert after_a.version != before.version
    assert after_a.task_versions["a"] != before.task_versions["a"]
    assert after_a.task_versions["b"] == before.task_versions["b"]
    # a field of b (its schema) changes only b
    after_b = load_folder(write(tmp_path / "p", MINI.replace("cite = true", "cite = false")))
    assert after_b.task_versions["a"] == before.task_versions["a"]
    assert after_b.task_versions["b"] != before.task_versions["b"]
    # shared instructions reach every task
    shared = load_folder(write(tmp_path / "p", MINI.replace("shared words", "other words")))
    assert all(shared.task_versions[t] != before.task_versions[t] for t in ("a", "b"))
    # a new file in the folder changes the profile version only
    (tmp_path / "p" / "NOTES.md").write_text("why", encoding="utf-8")
    noted = load_folder(tmp_path / "p")
    assert noted.version != shared.version and noted.task_versions == shared.task_versions


def test_same_declaration_same_versions_anywhere(tmp_path: Path) -> None:
    shutil.copytree(PROFILES_DIR / "contract", tmp_path / "contract")
    here, there = load_folder(tmp_path / "contract"), load_folder(PROFILES_DIR / "contract")
    assert (here.version, dict(here.task_versions)) == (there.version, dict(there.task_versions))


def test_tasks_share_the_system_message_and_document_prefix() -> None:
    profile = load_folder(PROFILES_DIR / "contract")
    model = get_model("kimi-k2.5")
    requests = []
    for task in profile.tasks:
        tp = profile.task_profile(task.name)
        assert tp.version == profile.task_versions[task.name] and tp.system == profile.system
        text = tp.task("task", total_pages=1)
        assert f'Task "{task.name}"' in text and '"$schema"' in text  # `$` survives the substitution
        requests.append(
            build_request(
                tp,
                model,
                '<page number="1">\nx\n</page>',
                text,
                stage=Stage.SINGLE,
                max_tokens=99,
                content_tokens=5,
            )
        )
    assert len({r.prefix_key for r in requests}) == 1  # tasks 2..N read the document from the cache
    assert len({r.request_key for r in requests}) == len(profile.tasks)
    map_text = profile.task_profile("parties").task(
        "map", part=1, parts=2, first_page=1, last_page=3, total_pages=6
    )
    assert "part 1 of 2" in map_text and "pages 1 to 3 of 6" in map_text
    assert '"required"' in map_text  # cited values still require their pages...
    assert '"required":["parties"]' not in map_text  # ...but a partial requires no field
    assert set(templates()) == {"system", "task", "map", "reduce", "repair", "pack"}
