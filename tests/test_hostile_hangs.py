"""Files that hang a reader (issue 10): a FIFO, a link to /dev/zero, a 30 GB sparse file, a stuck
PDF under `kimidocs extract`, a file that changes while it is read. Every file is made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline
from hostile import stuck_pdf

import extractors
from extractors import TooLarge, UnsupportedFormat

KIMIDOCS = Path(sys.executable).parent / "kimidocs"


@pytest.fixture()
def special_files(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero and a 30 GB sparse file, all named like documents."""
    folder = tmp_path / "special"
    folder.mkdir()
    os.mkfifo(folder / "a.pdf")
    (folder / "z.pdf").symlink_to("/dev/zero")
    with open(folder / "huge.pdf", "wb") as fh:
        fh.truncate(30 * 1024**3)  # sparse: no disk used, but hashing it would read 30 GB
    return {"fifo": folder / "a.pdf", "zero": folder / "z.pdf", "huge": folder / "huge.pdf"}


@pytest.mark.timeout(60)
def test_fifo_and_device_are_refused_before_any_read(special_files: dict[str, Path]) -> None:
    for name in ("fifo", "zero"):
        path = special_files[name]
        with pytest.raises(UnsupportedFormat, match="not a regular file"):
            extractors.extract(path)
        with pytest.raises(UnsupportedFormat, match="not a regular file"):
            extractors.sha256_file(path)


@pytest.mark.timeout(60)
def test_size_limit_is_checked_before_hashing(special_files: dict[str, Path]) -> None:
    with pytest.raises(TooLarge, match="32,212,254,720 bytes"):
        extractors.sha256_file(special_files["huge"])


@pytest.mark.timeout(120)
def test_analyze_records_special_files_and_goes_on(
    special_files: dict[str, Path], tmp_path: Path, kimi_emulator
) -> None:
    folder = special_files["fifo"].parent
    (folder / "note.txt").write_text("A short note about the quarterly budget.\n" * 20)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(folder, db, kimi_emulator)
    by_name = {Path(o.path).name: (o.status, o.error_type) for o in report.outcomes}
    assert by_name == {
        "a.pdf": ("failed", "NotRegularFile"),
        "z.pdf": ("failed", "NotRegularFile"),
        "huge.pdf": ("failed", "TooLarge"),
        "note.txt": ("ok", None),
    }
    failures = db_rows(db, "SELECT path, error_type FROM failures ORDER BY path")
    assert [(Path(p).name, t) for p, t in failures] == [
        ("a.pdf", "NotRegularFile"),
        ("huge.pdf", "TooLarge"),
        ("z.pdf", "NotRegularFile"),
    ]
    assert db_rows(db, "SELECT status FROM runs") == [("completed",)]


@pytest.mark.timeout(120)
def test_extract_command_has_the_time_bound_of_analyze(tmp_path: Path) -> None:
    # The page is hours of work for pdfium and pypdf alike, on any machine (hostile.stuck_pdf).
    env = {**os.environ, "KIMIDOCS_EXTRACT_TIMEOUT_S": "0.3"}
    stuck = stuck_pdf(tmp_path / "stuck.pdf")
    proc = subprocess.run(
        [str(KIMIDOCS), "extract", str(stuck)],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert "\tERROR\tExtractionTimeout: " in proc.stdout and "no page finished for 0.3 s" in proc.stdout
    assert "KIMIDOCS_EXTRACT_TIMEOUT_S" in proc.stdout


def test_a_file_that_changes_while_read_leaves_no_orphan_rows(
    tmp_path: Path, kimi_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashed as version 1, rewritten before extraction: the row points at the bytes extracted."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    note = folder / "note.txt"
    note.write_text("Version one of the note about the supplier contract.\n" * 10)
    real_extract = extractors.extract

    def extract_after_a_change(path, **kwargs):
        Path(path).write_text("Version two: the supplier contract was renegotiated in May.\n" * 10)
        return real_extract(path, **kwargs)

    monkeypatch.setattr(extractors, "extract", extract_after_a_change)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(folder, db, kimi_emulator)
    assert [o.status for o in report.outcomes] == ["ok"]
    orphans = db_rows(db, "SELECT f.path FROM files f ANTI JOIN documents d ON f.doc_id = d.doc_id")
    assert orphans == []
    assert db_rows(db, "SELECT doc_id FROM files") == [(extractors.sha256_file(note),)]
