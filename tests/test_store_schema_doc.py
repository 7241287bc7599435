"""docs/SCHEMA.md cannot drift: its SQL runs, and every table, view and column it must describe is in it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import run_pipeline

from kimidocs.emulator import run_emulator_in_thread
from kimidocs.store import Store

SCHEMA_MD = Path(__file__).resolve().parent.parent / "docs" / "SCHEMA.md"
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n\n```sql\n(?P<sql>.*?)```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    text = SCHEMA_MD.read_text(encoding="utf-8")
    return [(m["before"], m["sql"]) for m in _BLOCK.finditer(text)]


SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Store:
    """A database written by a real pipeline run: the samples, a filing with dates and amounts,
    and an encrypted file that fails -- so every example has rows to show."""
    tmp = tmp_path_factory.mktemp("schema")
    folder = tmp / "inbox"
    shutil.copytree(SAMPLES, folder)
    for rel in ("pdf/federal-register-2020-17221.pdf", "bad/libreoffice-writer-password.pdf"):
        shutil.copy(corpus / rel, folder)
    db = tmp / "k.duckdb"
    with run_emulator_in_thread() as emu:
        report = run_pipeline(folder, db, emu)
    assert report.count("ok") == 6 and report.count("failed") == 1
    return Store(db, read_only=True)


def test_the_document_has_examples() -> None:
    assert len(_examples()) >= 10


@pytest.mark.parametrize(("intro", "sql"), _examples(), ids=lambda v: v[:50] if "\n" not in v else None)
def test_every_sql_example_runs_and_answers(filled_db: Store, intro: str, sql: str) -> None:
    result = filled_db.query(sql)
    assert result.columns
    if "may be empty" not in intro:
        assert result.rows, f"example returned no rows: {intro}"


def test_every_table_view_and_column_is_documented(filled_db: Store) -> None:
    text = SCHEMA_MD.read_text(encoding="utf-8")
    for name, kind in filled_db.relations():
        assert f"`{name}`" in text, f"{kind} {name} is not in docs/SCHEMA.md"
        columns = [r[0] for r in filled_db.query(f'DESCRIBE "{name}"').rows]
        missing = [c for c in columns if not re.search(rf"\b{re.escape(c)}\b", text)]
        assert not missing, f"{name}: columns {missing} are not in docs/SCHEMA.md"
