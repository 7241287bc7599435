"""Does a run pay for what earlier runs stored? (issue 22 item 5)

    .venv/bin/python bench/search_index.py [--code DIR] [--words 2000000] [--repeat 3]

One `kimidocs analyze` of one small PDF (crazyones.pdf, 1 page), against an emulator in this process, on:

- an empty store,
- a store holding `--words` words (2 million by default: ~13 MB of text) in ONE page, as a 21 MB text file
  on one line leaves it,
- a store holding as many words in ordinary pages (300 words each, 10 per document).

The stores are filled through the Store API (what earlier runs store), in a child process of the code
measured, then copied for each repetition. Each run is a fresh `python -m kimidocs.cli analyze` (wall time
of the process, median of `--repeat`). `kimidocs search` runs once before (with this change, the first
search ever indexes the whole store) and twice after: the first search after the run indexes what the run
changed, the second finds nothing to do. `--code DIR` measures another checkout
(PYTHONPATH=DIR), e.g. the commit before the change, where the run itself rebuilt the index over every
stored page. The goal: a run on a full store takes at most 1.5 x the run on the empty store + 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kimidocs.emulator import EmulatorConfig, run_emulator_in_thread  # noqa: E402

CORPUS = Path(os.environ.get("KIMIDOCS_CORPUS", REPO.parent / "shared" / "corpus"))
SMALL_PDF = CORPUS / "pdf" / "crazyones.pdf"

# Runs in a child process with PYTHONPATH = the code measured: only Store API every version has.
FILL = textwrap.dedent(
    """
    import hashlib, random, sys
    from datetime import datetime
    from extractors.document import Document, Page
    from kimidocs.core.records import FileRecord
    from kimidocs.store import Store

    db, shape, words = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(7)
    vocab = (
        "agreement party payment invoice contract term notice shall pursuant section clause annual report "
        "revenue board meeting delivery service provider customer liability warranty schedule amount total "
        "period date pump valve crew station north south quarter maintenance log"
    ).split() + [f"item{n}" for n in range(2000)]

    def text(n):
        return " ".join(rng.choice(vocab) for _ in range(n))

    if shape == "one-page":
        docs = [[text(words)]]
    else:
        per_page, per_doc = 300, 10
        pages = [text(per_page) for _ in range(words // per_page)]
        docs = [pages[i : i + per_doc] for i in range(0, len(pages), per_doc)]
    store = Store(db)
    store.migrate()
    for i, texts in enumerate(docs):
        doc_id = hashlib.sha256(f"{shape}-{i}".encode()).hexdigest()
        doc = Document(
            path=f"earlier/{shape}-{i:05d}.txt",
            sha256=doc_id,
            kind="text",
            size=sum(len(t) for t in texts),
            pages=tuple(Page(n, t) for n, t in enumerate(texts, 1)),
            extractor_version="bench",
        )
        store.save_document(doc, FileRecord(doc.path, doc_id, doc.size, datetime(2026, 3, 1)))
    store.close()
    """
)


def _env(code: Path, home: Path, emu_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **emu_env, "PYTHONPATH": str(code), "HOME": str(home)}


def _timed(cmd: list[str], env: dict[str, str], cwd: Path, *, check: bool = True) -> float:
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:5])} ended with {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


def measure(code: Path, words: int, repeat: int) -> list[tuple[str, float, float, float]]:
    """(store, search before s, run s, first search after s, second search after s) per store shape,
    medians."""
    out = []
    with tempfile.TemporaryDirectory(prefix="kimidocs-search-") as tmp_dir:
        tmp = Path(tmp_dir)
        folder = tmp / "inbox"
        folder.mkdir()
        shutil.copyfile(SMALL_PDF, folder / SMALL_PDF.name)
        with run_emulator_in_thread(EmulatorConfig()) as emu:
            emu_env = {"KIMI_BASE_URL": emu.base_url, "KIMI_API_KEY": emu.api_key}
            for shape in ("empty", "one-page", "pages"):
                filled = tmp / f"{shape}.duckdb"
                fill_env = _env(code, tmp, {})
                if shape != "empty":
                    cmd = [sys.executable, "-c", FILL, str(filled), shape, str(words)]
                    fill_s = _timed(cmd, fill_env, tmp)
                    print(f"filled {shape}: {words:,} words in {fill_s:.1f} s", file=sys.stderr)
                befores, runs, firsts, seconds = [], [], [], []
                for i in range(repeat):
                    db, home = tmp / f"run-{shape}-{i}.duckdb", tmp / f"home-{shape}-{i}"
                    home.mkdir()
                    if filled.exists():
                        shutil.copyfile(filled, db)
                    env = _env(code, home, emu_env)
                    cli = [sys.executable, "-m", "kimidocs.cli"]
                    search = [*cli, "search", "misfits rebels", "--db", str(db), "-f", "csv"]
                    if shape != "empty":
                        # before this change: "no full-text index yet" (only runs built one)
                        befores.append(_timed(search, env, tmp, check=False))
                    runs.append(_timed([*cli, "analyze", str(folder), "--db", str(db), "-q"], env, tmp))
                    firsts.append(_timed(search, env, tmp))
                    seconds.append(_timed(search, env, tmp))
                before = statistics.median(befores) if befores else 0.0
                out.append((shape, before, *map(statistics.median, (runs, firsts, seconds))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose kimidocs runs")
    parser.add_argument("--words", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.code.resolve(), args.words, args.repeat)
    labels = {
        "empty": "empty store",
        "one-page": f"{args.words:,} words in one page",
        "pages": f"{args.words:,} words in pages of 300",
    }
    base = rows[0][2]
    print(
        f"{args.code.name}, median of {args.repeat}; goal: run <= 1.5 x empty + 1 s = {1.5 * base + 1:.1f} s"
    )
    print("| store before the run | search before | run of 1 small PDF | x empty | 1st search after | 2nd |")
    print("|---|---|---|---|---|---|")
    for shape, before, run, first, second in rows:
        times = f"{before:.1f} s | {run:.1f} s | {run / base:.2f} | {first:.1f} s | {second:.1f} s"
        print(f"| {labels[shape]} | {times} |")


if __name__ == "__main__":
    main()
