"""SIGKILL in the middle of the map calls, then run again: nothing duplicated, nothing lost, nothing re-paid.

A long generated text (extraction is instant, unlike the long corpus PDF that costs ~30 s of CPU per run
here) with the 8k-window test model needs ~45 map calls plus reduce levels; the emulator's latency keeps
the run going long enough for the kill to land mid-map. The emulator's request log (a separate process, so it
outlives the kill) is the bill: a request answered before the kill whose result was stored must not be
sent again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from prefect_fixture import BIN, REPO, clean_env, stop_process

pytestmark = pytest.mark.slow

DOCS = ("pdf/crazyones.pdf", "docx/lorem_ipsum.docx")
KILL_AFTER_ANSWERED = 20
WORDS = [
    "audience",
    "speaker",
    "voice",
    "gesture",
    "pause",
    "argument",
    "evidence",
    "story",
    "memory",
    "breath",
    "rhythm",
    "emphasis",
    "question",
    "answer",
    "platform",
    "nerves",
    "practice",
    "outline",
    "climax",
    "humour",
    "clarity",
    "conviction",
    "sincerity",
    "persuasion",
]


def long_text(pages: int = 220) -> str:
    """~650k characters of varied, deterministic prose in paragraphs (about 45 chunks at an 8k window)."""
    paragraphs = []
    for p in range(pages * 4):
        words = [WORDS[(p * 7 + i * i + i * p) % len(WORDS)] for i in range(110)]
        paragraphs.append(f"Section {p}. " + " ".join(words).capitalize() + ".")
    return "\n\n".join(paragraphs)


def analyze_cmd(folder: Path, db: Path) -> list[str]:
    return [
        str(BIN / "kimidocs"),
        "analyze",
        str(folder),
        "--db",
        str(db),
        "--model",
        "kimidocs-test-8k",
        "--concurrency",
        "2",
        "--quiet",
    ]


def answered(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["path"].endswith("/chat/completions") and e["status"] == 200]


def test_sigkill_mid_run_then_rerun_repays_only_in_flight_calls(
    emulator_process, corpus: Path, tmp_path: Path
) -> None:
    emulator = emulator_process(latency_ms=60)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in DOCS:
        shutil.copy2(corpus / name, folder / Path(name).name)
    (folder / "long-speech.txt").write_text(long_text(), encoding="utf-8")
    db = tmp_path / "out.duckdb"
    env = clean_env(emulator.worker_env())

    first = subprocess.Popen(
        analyze_cmd(folder, db),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while len(answered(emulator.requests())) < KILL_AFTER_ANSWERED:
            assert first.poll() is None, f"run ended before the kill: {first.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the map calls"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop_process(first)
    # Requests in flight at the kill finish on the emulator side and reach its log: wait until none is.
    deadline = time.monotonic() + 60
    while emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    before = emulator.requests()
    with duckdb.connect(str(db), read_only=True) as con:
        run1 = con.execute("select run_id, status from runs").fetchall()
        keys1 = {r[0] for r in con.execute("select request_key from calls where status = 'ok'").fetchall()}
    assert len(run1) == 1 and run1[0][1] == "running"  # killed: nobody closed it
    assert 0 < len(keys1) <= len(answered(before))

    second = subprocess.run(
        analyze_cmd(folder, db), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    after = emulator.requests()[len(before) :]

    with duckdb.connect(str(db), read_only=True) as con:
        run2_id = con.execute("select run_id from runs where status = 'completed'").fetchone()[0]
        # the killed run no longer pretends to be running: the rerun on this host saw its process gone
        assert con.execute("select status, pid from runs where run_id = ?", [run1[0][0]]).fetchone() == (
            "crashed",
            first.pid,
        )
        keys2 = [
            r[0]
            for r in con.execute(
                "select request_key from calls where status = 'ok' and run_id = ?", [run2_id]
            ).fetchall()
        ]
        # (a) no duplicate rows
        assert con.execute("select count(*) - count(distinct doc_id) from documents").fetchone()[0] == 0
        assert con.execute("select count(*) - count(distinct path) from files").fetchone()[0] == 0
        assert (
            con.execute(
                "select count(*) from (select doc_id, page_no from pages group by all having count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            con.execute(
                "select count(*) from (select doc_id, profile, prompt_version, model from summaries "
                "group by all having count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            con.execute(
                "select count(*) from (select request_key from calls where status = 'ok' "
                "group by all having count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        # (b) every document summarised or listed in failures
        paths = {str(p) for p in folder.iterdir()}
        done = {
            r[0]
            for r in con.execute(
                "select f.path from files f join summaries s using (doc_id) union select path from failures"
            ).fetchall()
        }
        summarised = con.execute("select count(*) from summaries").fetchone()[0]
    assert paths <= done
    assert summarised == len(DOCS) + 1

    # (c) no call stored before the kill was paid again: not in our calls table...
    assert keys1.isdisjoint(keys2)
    # ...and not in the emulator's bill. Bodies are deterministic, so a resent request has the same hash.
    hashes_before = {e["request_hash"] for e in answered(before)}
    resent = [e for e in answered(after) if e["request_hash"] in hashes_before]
    in_flight_at_kill = len(answered(before)) - len(keys1)  # answered, but the answer was never stored
    assert len(resent) <= in_flight_at_kill
    assert len(resent) <= 4  # 2 documents x 2 calls in flight at most
    # The rerun paid exactly for what it stored.
    assert len(answered(after)) == len(keys2)
    assert max(Counter(e["request_hash"] for e in answered(after)).values()) == 1
