"""What `kimidocs analyze` prints fits the terminal: rendered at 80 and 200 columns, and piped."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_pipeline
from rich.console import Console

from kimidocs.commands.analyze import plural, shown_path, summary_table

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report_and_folder(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread

    root = tmp_path_factory.mktemp("out") / ("a-rather-long-folder-name-" * 3) / "inbox"
    shutil.copytree(REPO / "data" / "samples", root, ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(corpus / "bad" / "empty.pdf", root / "empty.pdf")
    with run_emulator_in_thread(EmulatorConfig()) as emu:
        report = run_pipeline(root, root.parent / "k.duckdb", emu)
    return report, root


def _render(table, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 200])
def test_the_results_table_fits_the_terminal(report_and_folder, width: int) -> None:
    report, root = report_and_folder
    lines = _render(summary_table(report, root, width), width)
    assert max(len(line) for line in lines) <= width
    failed = next(line for line in lines if "empty.pdf" in line)
    assert str(root) not in failed  # paths relative to the folder
    assert "failed" in failed and "EmptyDocument" in failed  # the reason starts with its type
    assert "0.00000" in failed  # calls and cost are never squeezed out
    if width == 200:
        assert "EmptyDocument: zero-byte file" in failed
    for outcome in report.outcomes:
        assert any(Path(outcome.path).name[:6] in line for line in lines)


def test_piped_output_is_not_cut_at_80_columns(tmp_path: Path, make_emulator) -> None:
    emu = make_emulator()
    folder = tmp_path / ("deep-" * 12) / "in"
    shutil.copytree(REPO / "data" / "samples", folder, ignore=shutil.ignore_patterns("*.md"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "KIMIDOCS_", "COLUMNS"))}
    env.update(KIMI_BASE_URL=emu.base_url, KIMI_API_KEY=emu.api_key)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kimidocs.cli import main; main()",
            "analyze",
            str(folder),
            "--db",
            str(tmp_path / "k.duckdb"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "lorem_ipsum.docx" in line]
    assert rows and "fermentum vitae dolor" in rows[-1]  # the whole title, not rich's 80 columns


def test_numbers_agree_with_their_nouns() -> None:
    assert (plural(1, "page"), plural(2, "page"), plural(1_000, "call")) == (
        "1 page",
        "2 pages",
        "1,000 calls",
    )


def test_shown_path_outside_the_folder_stays_whole(tmp_path: Path) -> None:
    assert shown_path("/elsewhere/x.pdf", tmp_path) == "/elsewhere/x.pdf"
    assert shown_path(str(tmp_path / "a" / "b.pdf"), tmp_path) == "a/b.pdf"
