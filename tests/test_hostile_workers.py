"""Extraction workers under faults (issue 10): a memory cap that turns a hungry file into a typed
error, and workers that die with a parent killed while they work."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hostile import MiB, WorkerMemory, address_space_cap, flate_bomb_pdf

import extractors
from extractors import Limits, TooLarge, isolation


def test_worker_memory_cap_is_a_typed_error_and_the_pool_recovers(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with open(big, "w") as fh:
        for _ in range(100):
            fh.write("words and more words\n\n" * (MiB // 22))
    with pytest.raises(TooLarge, match="needs more memory than the 160 MiB cap"):
        extractors.extract(big, limits=Limits(timeout_s=60, memory_budget=160 * MiB))
    small = tmp_path / "small.txt"
    small.write_text("still fine\n")
    assert extractors.extract(small, limits=Limits(timeout_s=60, memory_budget=160 * MiB)).chars == 10


def test_memory_budget_setting_is_validated_and_reaches_the_limits() -> None:
    from pydantic import ValidationError

    from kimidocs.run.document import extraction_limits
    from kimidocs.run.settings import Settings

    assert Settings(_env_file=None).extract_memory_mb == 512
    limits = extraction_limits(Settings(KIMIDOCS_EXTRACT_MEMORY_MB=1024, _env_file=None))
    assert limits.memory_budget == 1024 * MiB and limits.memory_hint == "KIMIDOCS_EXTRACT_MEMORY_MB"
    with pytest.raises(ValidationError, match="KIMIDOCS_EXTRACT_MEMORY_MB"):
        Settings(KIMIDOCS_EXTRACT_MEMORY_MB=100, _env_file=None)  # not even one worker's share


def test_two_flate_bombs_together_stay_within_the_memory_budget_and_end_too_large(tmp_path: Path) -> None:
    """Issue 22: each worker was capped at 2 GiB and as many ran as there are cores, so two 4 GiB Flate
    bombs extracted together took 3.9 GB. The workers now share one budget. pdfium aborts under its cap;
    pypdf, asked next, runs out of its share or reaches its decompression limit: TooLarge either way."""
    bombs = [flate_bomb_pdf(tmp_path / f"bomb-{tag}.pdf", tag=tag) for tag in "ab"]  # 4 MB -> 4 GiB each
    isolation.shutdown()  # only the workers of this extraction are measured
    with WorkerMemory() as seen:
        results = dict(extractors.extract_many(bombs, limits=Limits(timeout_s=120), workers=2))
    assert all(isinstance(r, TooLarge) for r in results.values()), results
    budget = Limits().memory_budget
    assert budget is not None and budget < 1_000_000_000  # the whole tree of a run stays under 1 GB
    assert 0 < seen.peak_caps <= budget, seen.peak_caps
    assert 0 < seen.peak_rss <= budget, seen.peak_rss


def test_a_stream_past_pypdfs_decompression_limit_is_too_large_not_a_damaged_page(tmp_path: Path) -> None:
    """Without any memory cap (in this process): pypdf stops at its 75 MB output limit, and the file
    is a decompression bomb, not a PDF with one unreadable page (CorruptDocument, as it used to be)."""
    bomb = flate_bomb_pdf(tmp_path / "bomb.pdf", inflated=100 * MiB)
    with pytest.raises(TooLarge, match="page 1: a stream inflates past pypdf's limit: a decompression bomb"):
        extractors.extract(bomb, limits=Limits(pdf_engine="pypdf"))


def test_the_budget_not_the_cores_sets_how_many_workers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine with 8 cores, a 512 MiB budget still runs 2 workers of 256 MiB, never 8 of them."""
    monkeypatch.setattr(isolation, "MAX_WORKERS", 8)
    files = []
    for i in range(16):
        files.append(tmp_path / f"note-{i}.txt")
        files[-1].write_text(f"note {i}\n")
    limits = Limits(timeout_s=60, memory_budget=512 * MiB)
    assert (limits.workers(8), limits.worker_memory(8)) == (2, 256 * MiB)
    isolation.shutdown()
    with WorkerMemory(every_s=0.001) as seen:
        results = list(extractors.extract_many(files, limits=limits, workers=8))
        caps = [address_space_cap(w.proc.pid) for w in isolation._idle]
    assert all(not isinstance(r, Exception) for _, r in results)
    assert caps and set(caps) == {256 * MiB}
    assert 1 <= seen.most_alive <= 2 and seen.peak_caps <= 512 * MiB
    isolation.shutdown()


PARENT = textwrap.dedent(
    """
    import sys, time
    from extractors import isolation

    class Sleep:  # unpickling it keeps the worker busy, as a slow file would
        def __reduce__(self):
            return (time.sleep, (120,))

    worker = isolation._Worker()
    worker.send.send(Sleep())
    print(worker.proc.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.timeout(60)
def test_a_busy_worker_dies_with_its_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = os.pidfd_open(int(parent.stdout.readline()))  # readable once the process has ended
    finally:
        parent.kill()  # SIGKILL: no atexit, no cleanup, the worker is mid-"file"
        parent.wait()
    try:
        ended, _, _ = select.select([worker], [], [], 20)
        if not ended:
            signal.pidfd_send_signal(worker, signal.SIGKILL)
        assert ended, "the extraction worker outlived its parent"
    finally:
        os.close(worker)
