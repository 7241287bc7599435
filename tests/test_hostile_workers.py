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
from hostile import MiB

import extractors
from extractors import Limits, TooLarge


def test_worker_memory_cap_is_a_typed_error_and_the_pool_recovers(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with open(big, "w") as fh:
        for _ in range(100):
            fh.write("words and more words\n\n" * (MiB // 22))
    with pytest.raises(TooLarge, match="needs more memory than the 160 MiB cap"):
        extractors.extract(big, limits=Limits(timeout_s=60, max_memory=160 * MiB))
    small = tmp_path / "small.txt"
    small.write_text("still fine\n")
    assert extractors.extract(small, limits=Limits(timeout_s=60, max_memory=160 * MiB)).chars == 10


def test_memory_cap_setting_is_validated() -> None:
    from pydantic import ValidationError

    from kimidocs.run.settings import Settings

    assert Settings(_env_file=None).extract_max_memory_bytes == 2 * 1024**3
    with pytest.raises(ValidationError, match="KIMIDOCS_EXTRACT_MAX_MEMORY_BYTES"):
        Settings(KIMIDOCS_EXTRACT_MAX_MEMORY_BYTES=1024, _env_file=None)


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
