"""Two `kimidocs analyze` processes on one database, one emulator: every unique request is paid once.

The emulator runs in its own process and logs every request it answered; that log is the bill. The
second run waits for the first (one analysing run per database file), then finds every document
finished and pays nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest
from conftest import db_rows
from prefect_fixture import BIN, REPO, clean_env, stop_process

from kimidocs.store import RunLock, Store

DOCS = 30


def _docs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(DOCS):
        body = " ".join(f"word{i}x{k}" for k in range(60))
        (folder / f"note-{i:02d}.txt").write_text(
            f"Note {i}\n\nDelivered on 2024-01-{1 + i % 28:02d}. {body}."
        )
    return folder


def _analyze(folder: Path, db: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [str(BIN / "kimidocs"), "analyze", str(folder), "--db", str(db), "--no-pack", "--concurrency", "2"]
    cmd.append("--quiet")
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_two_concurrent_runs_on_one_database_pay_each_request_once(emulator_process, tmp_path: Path) -> None:
    emulator = emulator_process(latency_ms=40)
    folder, db = _docs(tmp_path / "in"), tmp_path / "k.duckdb"
    env = clean_env(emulator.worker_env())
    runs = [_analyze(folder, db, env), _analyze(folder, db, env)]
    try:
        results = [r.communicate(timeout=300) for r in runs]
    finally:
        for r in runs:
            stop_process(r)
    for r, (out, err) in zip(runs, results, strict=True):
        assert r.returncode == 0, out[-2000:] + err[-2000:]
    answered = [e for e in emulator.requests("/chat/completions") if e["status"] == 200]
    paid = Counter(e["request_hash"] for e in answered)
    assert len(paid) == DOCS
    assert sum(paid.values()) == DOCS, f"{sum(paid.values())} calls for {DOCS} unique requests"
    assert db_rows(db, "SELECT count(*), count(DISTINCT request_key) FROM calls") == [(DOCS, DOCS)]
    assert db_rows(db, "SELECT count(*) FROM summaries") == [(DOCS,)]
    assert any("waiting" in err for _out, err in results)  # the second run said why it waited


HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    con.close()
    """
)


def test_kimidocs_query_waits_for_a_held_database_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Store(db).migrate()
    Store(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "holding"
    query = subprocess.Popen(
        [str(BIN / "kimidocs"), "query", "SELECT count(*) AS n FROM documents", "--db", str(db), "-f", "csv"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert query.stderr is not None
        said = query.stderr.readline()
        assert "waiting for" in said and "another process is writing" in said
        holder.stdin.close()  # the writer lets go: the query gets in and answers
        out, _err = query.communicate(timeout=60)
        assert query.returncode == 0 and out.split() == ["n", "0"]
    finally:
        holder.kill()
        holder.wait()
        stop_process(query)


def test_the_run_lock_makes_a_second_run_wait_until_the_first_releases(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    first, second = RunLock(db), RunLock(db)
    first.acquire("run=one")
    told: list[str] = []
    waiting = threading.Event()

    def on_wait(message: str) -> None:
        told.append(message)
        waiting.set()

    taker = threading.Thread(target=second.acquire, args=("run=two", on_wait))
    taker.start()
    assert waiting.wait(timeout=30) and not second.held
    assert "run=one" in told[0] and str(db) in told[0]
    first.release()
    taker.join(timeout=30)
    assert second.held and "run=two" in (tmp_path / "k.duckdb.lock").read_text()
    second.release()
