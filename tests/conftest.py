"""Shared fixtures: where the corpus is, the emulator as a real server on a loopback port."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

pytest_plugins = ["emulator_fixture", "prefect_fixture"]

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("KIMIDOCS_CORPUS", REPO.parent / "shared" / "corpus"))


def manifest_rows() -> list[dict[str, str]]:
    """Rows of ../shared/corpus/MANIFEST.tsv (every file a correct extractor must handle)."""
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"corpus not found at {CORPUS} (set KIMIDOCS_CORPUS)")
    return CORPUS
