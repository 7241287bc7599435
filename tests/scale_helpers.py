"""Helpers for the scale-out tests: Prefect process workers as separate "machines", small documents.

A worker is `prefect worker start` in its own process group with its own PREFECT_HOME; its flow runs
are processes of their own (Prefect isolates each in a new session), so "the machine dies" means
SIGKILL for the worker's group and for the group of every process below it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import textwrap
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import escape

from prefect_fixture import BIN, REPO, PrefectServer

from flows.deployments import WORK_POOL

T = TypeVar("T")

WORDS = [
    "contract",
    "supplier",
    "invoice",
    "payment",
    "delivery",
    "term",
    "notice",
    "party",
    "clause",
    "renewal",
    "liability",
    "warranty",
    "audit",
    "report",
    "revenue",
    "margin",
    "forecast",
    "period",
    "quarter",
    "region",
    "customer",
    "service",
    "price",
    "volume",
]


def memo_text(i: int) -> list[str]:
    """Distinct paragraphs for document `i` (distinct text: no two documents share a request key)."""
    rng = random.Random(i)
    return [
        f"Memo {i}, part {p}: "
        + " ".join(rng.choice(WORDS) for _ in range(40))
        + f". Total {1000 + 17 * i + p} EUR."
        for p in range(3)
    ]


def _escape_pdf(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, paragraphs: list[str]) -> Path:
    """A one-page PDF with a text layer (Helvetica), written by hand with a correct xref table."""
    lines = [line for para in paragraphs for line in textwrap.wrap(para, 90)]
    ops = ["BT", "/F1 10 Tf", "12 TL", "40 800 Td"] + [f"({_escape_pdf(line)}) '" for line in lines] + ["ET"]
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    """A minimal WordprocessingML package with one w:p per paragraph."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    rel = "http://schemas.openxmlformats.org/package/2006/relationships"
    office = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
    body = "".join(f"<w:p><w:r><w:t>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr(
            "_rels/.rels",
            f'<Relationships xmlns="{rel}"><Relationship Id="rId1" Type="{office}" '
            'Target="word/document.xml"/></Relationships>',
        )
        zf.writestr("word/document.xml", f'<w:document xmlns:w="{w}"><w:body>{body}</w:body></w:document>')
    return path


def make_documents(folder: Path, count: int) -> list[Path]:
    """`count` small documents, PDF and DOCX in turn, each with text of its own (one call each)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        (write_pdf if i % 2 == 0 else write_docx)(
            folder / f"doc-{i:04d}.{'pdf' if i % 2 == 0 else 'docx'}", memo_text(i)
        )
        for i in range(count)
    ]


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` when time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(every_s)


@dataclass
class Worker:
    """One `prefect worker start` process standing in for a machine."""

    name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(
    server: PrefectServer, name: str, home: Path, env: Mapping[str, str], *, limit: int | None = None
) -> Worker:
    """A process worker on the kimidocs pool with its own PREFECT_HOME and environment `env`."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "worker.log"
    args = [str(BIN / "prefect"), "--no-prompt", "worker", "start", "--pool", WORK_POOL, "--name", name]
    if limit is not None:
        args += ["--limit", str(limit)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=server.env({"PREFECT_HOME": str(home), "PREFECT_WORKER_QUERY_SECONDS": "2", **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(name, proc, log)


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process we can see (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def hosts(worker: Worker, infrastructure_pid: str | None) -> bool:
    """Whether the flow run process `infrastructure_pid` ("pid" or "host:pid") runs under `worker`."""
    if not infrastructure_pid:
        return False
    pid = int(str(infrastructure_pid).rsplit(":", 1)[-1])
    return pid in descendants(worker.process.pid)


def kill_machine(worker: Worker) -> None:
    """SIGKILL the worker and every process below it, each in its process group (a dead machine)."""
    groups = {worker.process.pid}
    for pid in descendants(worker.process.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            continue
    worker.process.wait(timeout=30)


def stop_workers(workers: list[Worker]) -> None:
    """Teardown: what is left of every worker, killed (the runs are over or the test failed)."""
    for worker in workers:
        if worker.process.poll() is None:
            kill_machine(worker)
