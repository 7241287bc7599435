"""Incremental runs over one folder and one DuckDB file: only new work costs calls.

The work key of a summary is (doc sha256, profile, prompt version, model). A changed file has a new sha256,
so it is a new document: it is analysed again and the old summary stays as history (both rows remain,
`files.doc_id` points at the new one). A deleted file is marked `deleted` in `files`. A new model, or
`force`, analyses everything again. The emulator's request log counts what each run paid for.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from kimidocs.kimi.client import KimiClient
from kimidocs.run import pipeline
from kimidocs.run.backend import Backend
from kimidocs.run.settings import Settings

TEXTS = {
    "alpha.txt": "Alpha Corp signed a supply contract with Beta Ltd on 3 March 2024 for 120,000 EUR.",
    "bravo.txt": "The board of Bravo Inc approved the 2025 budget of 4.2 million USD on 12 January 2025.",
    "charlie.txt": "Charlie GmbH reported a net loss of 310,000 EUR for the year ending 31 December 2023.",
}


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        # A few paragraphs so each file passes the text-quality gate like a real memo.
        (folder / name).write_text("\n\n".join(f"{text} Paragraph {i} repeats it." for i in range(6)))
    return folder


class Runner:
    """run_folder against the emulator; `calls()` is how many chat requests the emulator has answered."""

    def __init__(self, folder: Path, db: Path, emulator) -> None:
        self.folder, self.db, self.emulator = folder, db, emulator

    def run(self, **options) -> pipeline.RunReport:
        settings = Settings(
            KIMI_API_KEY=self.emulator.api_key, KIMI_BASE_URL=self.emulator.base_url, KIMIDOCS_DB=str(self.db)
        )
        backend = Backend(
            KimiClient(self.emulator.base_url, self.emulator.api_key, max_retries=1),
            "emulator",
            self.emulator.base_url,
        )
        opts = pipeline.RunOptions(folder=str(self.folder), db=str(self.db), **options)
        return pipeline.run_folder(opts, settings, backend=backend)

    def calls(self) -> int:
        return sum(1 for e in self.emulator.requests("/chat/completions") if e["status"] == 200)

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def statuses(self, report: pipeline.RunReport) -> dict[str, str]:
        return {Path(o.path).name: o.status for o in report.outcomes}


@pytest.fixture
def runner(tmp_path: Path, kimi_emulator) -> Runner:
    return Runner(write_folder(tmp_path / "in"), tmp_path / "k.duckdb", kimi_emulator)


def test_unchanged_changed_deleted_renamed(runner: Runner) -> None:
    first = runner.run()
    assert set(runner.statuses(first).values()) == {"ok"}
    paid = runner.calls()
    assert paid >= len(TEXTS)

    # Unchanged: zero calls.
    second = runner.run()
    assert set(runner.statuses(second).values()) == {"unchanged"}
    assert runner.calls() == paid

    # Changed: only that file is analysed again; the old summary stays as history.
    bravo = runner.folder / "bravo.txt"
    old_id = runner.rows("select doc_id from files where path = ?", [str(bravo)])[0][0]
    bravo.write_text(bravo.read_text() + "\n\nAddendum: the budget was revised to 4.5 million USD.")
    third = runner.run()
    assert runner.statuses(third) == {"alpha.txt": "unchanged", "bravo.txt": "ok", "charlie.txt": "unchanged"}
    assert runner.calls() > paid
    paid = runner.calls()
    new_id = runner.rows("select doc_id from files where path = ?", [str(bravo)])[0][0]
    assert new_id != old_id
    assert {r[0] for r in runner.rows("select doc_id from summaries")} >= {old_id, new_id}
    assert runner.rows("select count(*) from summaries")[0][0] == len(TEXTS) + 1

    # Deleted: marked in `files`, no calls, the summary stays.
    (runner.folder / "charlie.txt").unlink()
    fourth = runner.run()
    assert sorted(runner.statuses(fourth)) == ["alpha.txt", "bravo.txt"]
    assert runner.calls() == paid
    deleted = dict(runner.rows("select path, deleted from files"))
    assert deleted[str(runner.folder / "charlie.txt")] is True
    assert deleted[str(bravo)] is False and deleted[str(runner.folder / "alpha.txt")] is False

    # Renamed: same bytes, same document, no calls.
    (runner.folder / "alpha.txt").rename(runner.folder / "alpha-renamed.txt")
    fifth = runner.run()
    assert runner.statuses(fifth)["alpha-renamed.txt"] == "unchanged"
    assert runner.calls() == paid


def test_dry_run_uses_the_same_work_keys_as_the_run(runner: Runner) -> None:
    """After a full run a dry run says every document is unchanged at $0, as the real run then finds;
    a changed file is the only one priced, and a real run pays for exactly that one."""
    runner.run()
    before = runner.calls()
    dry = runner.run(dry_run=True)
    assert set(runner.statuses(dry).values()) == {"unchanged"} and dry.cost_usd_est == 0
    changed = runner.folder / "alpha.txt"
    changed.write_text(changed.read_text() + "\n\nAn addendum raises the rent by 5 %.")
    dry = runner.run(dry_run=True)
    planned = [Path(o.path).name for o in dry.outcomes if o.status == "planned"]
    assert planned == ["alpha.txt"] and dry.cost_usd_est > 0
    assert runner.calls() == before  # dry runs send nothing
    real = runner.run()
    assert [Path(o.path).name for o in real.outcomes if o.status == "ok"] == planned
    assert runner.calls() == before + 1


def test_new_model_reanalyses_everything_and_keeps_both_results(runner: Runner) -> None:
    runner.run()
    paid = runner.calls()
    other = runner.run(model="kimidocs-test-32k")
    assert set(runner.statuses(other).values()) == {"ok"}
    assert runner.calls() >= paid + len(TEXTS)
    models = runner.rows("select model, count(*) from summaries group by model order by model")
    assert models == [("kimi-k2.5", len(TEXTS)), ("kimidocs-test-32k", len(TEXTS))]
    # And back to the first model: still cached, zero calls.
    again = runner.run()
    assert set(runner.statuses(again).values()) == {"unchanged"}


def test_force_reanalyses_everything_without_duplicating_rows(runner: Runner) -> None:
    runner.run()
    paid = runner.calls()
    forced = runner.run(force=True)
    assert set(runner.statuses(forced).values()) == {"ok"}
    assert runner.calls() >= paid + len(TEXTS), "force must send the calls again, not reuse stored answers"
    assert runner.rows("select count(*) from summaries")[0][0] == len(TEXTS)
    assert runner.rows("select count(*) - count(distinct doc_id) from documents")[0][0] == 0
