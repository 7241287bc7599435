"""Memory of a run over hostile files (issue 22 item 4): the peak resident memory of the whole process
tree of `kimidocs analyze` (the CLI process and its extraction workers) over a folder of hostile files.

    .venv/bin/python bench/hostile_memory.py [--code DIR] [--one-line-mb N] [--memory-mb MB]

The folder: two 4 GiB Flate bombs (PDF, ~4 MB each), a 100 MiB DOCX ZIP bomb, a DOCX lying about its
size (200 MiB inflated), a DOCX of nested entities, a PDF of slow pages, the corpus' bad/ files, and with
`--one-line-mb` a text file of that many MB on one line. The run goes to an emulator in this process
(not measured). Resident memory (VmRSS) of the CLI process and every process below it is read from /proc
every 20 ms and summed, as tests/scale_helpers.py walks the tree. `--code DIR` runs the kimidocs of
another checkout (PYTHONPATH=DIR), to compare before and after; `--memory-mb` sets
KIMIDOCS_EXTRACT_MEMORY_MB. Prints one Markdown row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from hostile import MiB, W, docx_bomb, docx_xml, flate_bomb_pdf, lying_docx, slow_pdf  # noqa: E402

from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread  # noqa: E402

CORPUS = Path(os.environ.get("KIMIDOCS_CORPUS", REPO.parent / "shared" / "corpus"))
ENTITIES = "".join(
    f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "a" * 10}">' for i in range(6)
)  # 10^6 characters once expanded


def hostile_folder(folder: Path, one_line_mb: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    flate_bomb_pdf(folder / "bomb-a.pdf", tag="a")
    flate_bomb_pdf(folder / "bomb-b.pdf", tag="b")
    docx_bomb(folder / "zip-bomb.docx", inflated=100 * MiB)
    lying_docx(folder / "lying.docx", inflated=200 * MiB)
    body = f'<w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>&e5;</w:t></w:r></w:p></w:body></w:document>'
    docx_xml(folder / "entities.docx", f"<!DOCTYPE w:document [{ENTITIES}]>{body}")
    slow_pdf(folder / "slow.pdf", [5_000] * 4)
    for bad in sorted((CORPUS / "bad").iterdir()):
        shutil.copyfile(bad, folder / bad.name)
    if one_line_mb:
        words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
        with open(folder / "one-line.txt", "w") as fh:
            for _ in range(one_line_mb * 1_000_000 // len(words)):
                fh.write(words)
    return sorted(p.name for p in folder.iterdir())


def _tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(code: Path, folder: Path, db: Path, env: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "kimidocs.cli", "analyze", str(folder), "--db", str(db), "-q"]
    env = {**os.environ, **env, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(cmd, env=env, cwd=db.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = peak_parent = 0
    while proc.poll() is None:
        tree = _tree(proc.pid)
        peak_tree = max(peak_tree, sum(_rss(p) for p in tree))
        peak_parent = max(peak_parent, _rss(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"kimidocs analyze ended with {proc.returncode}: {err[-2000:]}")
    return {"tree": peak_tree, "parent": peak_parent, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose kimidocs runs")
    parser.add_argument("--one-line-mb", type=int, default=0)
    parser.add_argument("--memory-mb", type=int, default=None, help="KIMIDOCS_EXTRACT_MEMORY_MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kimidocs-hostile-") as tmp:
        folder = Path(tmp) / "hostile"
        names = hostile_folder(folder, args.one_line_mb)
        db = Path(tmp) / "k.duckdb"
        with run_emulator_in_thread(EmulatorConfig()) as emu:
            env = {"KIMI_BASE_URL": emu.base_url, "KIMI_API_KEY": emu.api_key, "HOME": tmp}
            if args.memory_mb is not None:
                env["KIMIDOCS_EXTRACT_MEMORY_MB"] = str(args.memory_mb)
            got = measure(args.code.resolve(), folder, db, env)
        with duckdb.connect(str(db), read_only=True) as con:
            failures = Counter(t for (t,) in con.execute("SELECT error_type FROM failures").fetchall())
            bombs = con.execute("SELECT error_type FROM failures WHERE path LIKE '%bomb-%.pdf'").fetchall()
    print(f"{len(names)} files; failures: {dict(sorted(failures.items()))}")
    print(f"the two Flate bombs: {[b[0] for b in bombs]}")
    print("| code | peak RSS, process tree | of which the CLI process | wall |")
    print("|---|---|---|---|")
    print(
        f"| {args.code} | {got['tree'] / MiB:.0f} MiB ({got['tree'] / 1e9:.2f} GB) | "
        f"{got['parent'] / MiB:.0f} MiB | {got['wall']:.1f} s |"
    )


if __name__ == "__main__":
    main()
