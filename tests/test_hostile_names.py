"""Hostile names and folders (issue 10): a file name that is not UTF-8, a subfolder that cannot
be listed. Neither may abort the run; both are recorded and the batch goes on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline


def test_non_utf8_file_name_is_stored_escaped_and_reruns_work(tmp_path: Path, kimi_emulator) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"bad\xff\xfe.txt")
    with open(raw, "wb") as fh:
        fh.write(b"Minutes of the board meeting about the new warehouse.\n" * 20)
    db = tmp_path / "k.duckdb"
    first = run_pipeline(folder, db, kimi_emulator)
    assert [(o.status, os.fsencode(o.path)) for o in first.outcomes] == [("ok", raw)]  # lossless in Python
    stored = str(folder / "bad\\xff\\xfe.txt")
    assert db_rows(db, "SELECT path FROM files") == [(stored,)]
    assert db_rows(db, "SELECT path, status FROM documents") == [(stored, "ok")]
    second = run_pipeline(folder, db, kimi_emulator)
    assert [o.status for o in second.outcomes] == ["unchanged"]
    assert db_rows(db, "SELECT count(*) FROM files WHERE deleted") == [(0,)]


def test_unreadable_subfolder_is_recorded_and_the_batch_goes_on(
    tmp_path: Path, kimi_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, chmod 000 does not stop us: the listing is refused the way the kernel would."""
    folder = tmp_path / "inbox"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "secret.txt").write_text("unreachable\n")
    (folder / "open.txt").write_text("The open file is read and summarised as usual.\n" * 10)
    real_scandir = os.scandir

    def scandir(path=None):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    db = tmp_path / "k.duckdb"
    report = run_pipeline(folder, db, kimi_emulator)
    assert [(Path(o.path).name, o.status, o.error_type) for o in report.outcomes] == [
        ("locked", "failed", "UnreadableFolder"),
        ("open.txt", "ok", None),
    ]
    assert db_rows(db, "SELECT stage, error_type FROM failures") == [("discover", "UnreadableFolder")]
