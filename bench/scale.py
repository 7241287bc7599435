"""Scale and pipeline overhead (DESIGN §7): many small documents, one 1,000-page one, and the CPU the
pipeline spends outside extraction.

    .venv/bin/python bench/scale.py [--sizes 100,300,1000] [--quick] [--skip-long] [--skip-overhead]
                                    [--out results.json]

Every measured run is `pipeline.run_folder` in a fresh Python process (so peaks are per run), against the
emulator in its own process (zero latency, no limits; its CPU is Kimi's side, not ours), client limiter at
tier5 (RPM and TPM far above what zero-latency calls reach here, so no limit binds and packing stays off:
one request per small document), `concurrency=4`, a fresh DuckDB per run.

scale     N small documents (70 % distinct generated .txt memos, 20 % copies of small corpus PDFs, 10 %
          of corpus DOCX, each copy made distinct by an appended byte string: pypdf and zipfile both ignore
          trailing bytes). Copies have the same text as their original, so their request bodies are the
          same and the pipeline reuses the first copy's logged answer (no new call): `calls` says how many
          requests went out. Reported per N: wall, docs/s, peak RSS of the pipeline process (VmHWM) and of
          the largest extraction worker (RUSAGE_CHILDREN after the workers are reaped), RSS while the run
          progresses, worker processes started.
long      one 1,000-page PDF (public-speaking-x2.pdf + the first 66 pages of The-Art-of-Public-Speaking.pdf,
          merged with pypdf) alone, with kimi-k2.5 and with kimidocs-test-32k (map-reduce).
overhead  the corpus' pdf/ and docx/ files (without the two long public-speaking PDFs): CPU of the pipeline
          process + its extraction workers during `run_folder`, against `extractors.extract_here` over the
          same files in another fresh process. overhead = (pipeline CPU - extraction CPU) / extraction CPU,
          also without a one-memo run's fixed CPU; once more with The-Art-of-Public-Speaking.pdf added.
          Then the same folder analysed serially in the main thread, twice: each stage's CPU charged by
          wrappers (DuckDB per Store method, tokenizer, HTTP client, ...: exact, no profiler distortion)
          and one cProfile on the CPU clock (names; it inflates pure-Python loops several-fold).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("KIMIDOCS_CORPUS", REPO.parent / "shared" / "corpus"))
LONG_PDFS = ("public-speaking-x2.pdf", "The-Art-of-Public-Speaking.pdf")
SMALL_PDFS = (
    "crazyones.pdf",
    "minimal-document.pdf",
    "multi_page.pdf",
    "normal_4pages.pdf",
    "multicolumn.pdf",
    "code_and_formula.pdf",
    "2305.03393v1-pg9.pdf",
    "right_to_left_01.pdf",
    "amt_handbook_sample.pdf",
)
SMALL_DOCX = (
    "lorem_ipsum.docx",
    "word_sample.docx",
    "docx_lists.docx",
    "unit_test_headers.docx",
    "footnotes.docx",
)
CHILD_TIMEOUT_S = 420
WORDS = (
    "invoice",
    "contract",
    "supplier",
    "payment",
    "delivery",
    "warranty",
    "clause",
    "notice",
    "term",
    "renewal",
    "party",
    "schedule",
    "amount",
    "currency",
    "penalty",
    "audit",
    "report",
    "quarter",
    "revenue",
    "margin",
    "forecast",
    "liability",
    "insurance",
    "shipment",
)


# ---------------------------------------------------------------------------------------------- inputs


def memo(i: int, rng: random.Random) -> str:
    """A distinct small memo, 600-6,000 characters: one call, no map-reduce."""
    paras = []
    for p in range(rng.randint(2, 16)):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60)))
        paras.append(f"Memo {i}, section {p}: {words}. Total {1000 + i * 17 + p} EUR.")
    return "\n\n".join(paras)


def make_small_folder(folder: Path, n: int, seed: int = 7) -> dict[str, int]:
    """`n` small documents, distinct bytes each; returns how many of each kind."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = {"txt": 0, "pdf": 0, "docx": 0}
    for i in range(n):
        r = i % 10
        if r < 7:
            (folder / f"memo-{i:05d}.txt").write_text(memo(i, rng), encoding="utf-8")
            kinds["txt"] += 1
            continue
        if r < 9:
            src = CORPUS / "pdf" / SMALL_PDFS[i % len(SMALL_PDFS)]
            tail, kind = f"\n%kimidocs-bench-copy-{i}\n".encode(), "pdf"
        else:
            src = CORPUS / "docx" / SMALL_DOCX[i % len(SMALL_DOCX)]
            tail, kind = f"kimidocs-bench-copy-{i}".encode(), "docx"
        (folder / f"copy-{i:05d}-{src.name}").write_bytes(src.read_bytes() + tail)
        kinds[kind] += 1
    return kinds


def make_long_pdf(path: Path, pages: int) -> Path:
    """`pages` pages of real book text: public-speaking-x2.pdf (934 p.), topped up from the original."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    x2 = PdfReader(CORPUS / "pdf" / LONG_PDFS[0])
    for page in x2.pages[:pages]:
        writer.add_page(page)
    if len(writer.pages) < pages:
        art = PdfReader(CORPUS / "pdf" / LONG_PDFS[1])
        for page in art.pages[: pages - len(writer.pages)]:
            writer.add_page(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def make_long_txt(path: Path, pages: int) -> Path:
    """The quick stand-in: ~`pages` × 3,000 characters of distinct memo paragraphs in one .txt file."""
    rng = random.Random(11)
    parts, size, i = [], 0, 0
    while size < pages * 3_000:
        parts.append(memo(i, rng))
        size += len(parts[-1]) + 2
        i += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts), encoding="utf-8")
    return path


def corpus_folder(folder: Path, with_art: bool = False) -> list[str]:
    """The overhead folder: corpus pdf/ and docx/ without the two long PDFs (copied, not linked);
    `with_art` adds The-Art-of-Public-Speaking.pdf (467 pages, most of the extraction time then)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for sub in ("pdf", "docx"):
        for src in sorted((CORPUS / sub).iterdir()):
            if src.name in LONG_PDFS and not (with_art and src.name == LONG_PDFS[1]):
                continue
            shutil.copy2(src, folder / src.name)
            names.append(src.name)
    return names


# ---------------------------------------------------------------------------------------------- child side


def _status_kb(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child_run(folder: str, db: str, base_url: str, api_key: str, model: str) -> dict:
    """Inside the measured process: one `run_folder`, with RSS sampled as documents finish."""
    cpu_start = _cpu(resource.RUSAGE_SELF)
    import extractors.isolation as isolation
    from kimidocs.run import pipeline
    from kimidocs.run.settings import Settings

    # Count worker starts and read each worker's own VmHWM just before it is closed (RUSAGE_CHILDREN's
    # maxrss is no good here: a vfork'ed child inherits the parent's high-water mark). Behaviour unchanged.
    spawned, worker_hwm = [0], [0]
    original_init, original_close = isolation._Worker.__init__, isolation._Worker.close

    def counting_init(self: isolation._Worker) -> None:
        spawned[0] += 1
        original_init(self)

    def measuring_close(self: isolation._Worker) -> None:
        with contextlib.suppress(OSError):  # already gone: nothing to read
            worker_hwm[0] = max(worker_hwm[0], _status_kb("VmHWM", str(self.proc.pid)))
        original_close(self)

    isolation._Worker.__init__ = counting_init  # type: ignore[method-assign]
    isolation._Worker.close = measuring_close  # type: ignore[method-assign]

    done, samples, reused, lock = [0], [], [0], threading.Lock()

    class Counting(pipeline.QuietObserver):
        def call_reused(self, request_key: str) -> None:
            with lock:
                reused[0] += 1

        def document_finished(self, outcome: pipeline.DocumentOutcome) -> None:
            with lock:
                done[0] += 1
                if done[0] % 25 == 0:
                    samples.append((done[0], _status_kb("VmRSS")))

    observer = Counting()

    settings = Settings(
        KIMI_API_KEY=api_key, KIMI_BASE_URL=base_url, KIMIDOCS_DB=db, KIMIDOCS_TIER="tier5", _env_file=None
    )
    import_cpu = _cpu(resource.RUSAGE_SELF) - cpu_start
    rss_before = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    report = pipeline.run_folder(
        pipeline.RunOptions(folder=folder, db=db, model=model, concurrency=4), settings, observer=observer
    )
    wall = time.perf_counter() - t0
    self_cpu = _cpu(resource.RUSAGE_SELF) - c0
    isolation.shutdown()  # reap the idle workers, so RUSAGE_CHILDREN covers every one of them
    outs = report.outcomes
    return {
        "docs": len(outs),
        "ok": report.count("ok"),
        "failed": report.count("failed"),
        "other": len(outs) - report.count("ok", "failed"),
        "calls": sum(o.calls for o in outs),
        "reused_calls": reused[0],
        "pages": sum(o.pages for o in outs),
        "coverage": [o.coverage for o in outs if o.coverage is not None][:3],
        "strategy": sorted({o.strategy for o in outs if o.strategy}),
        "wall_s": wall,
        "import_cpu_s": import_cpu,
        "self_cpu_s": self_cpu,
        "workers_cpu_s": _cpu(resource.RUSAGE_CHILDREN),
        "workers_started": spawned[0],
        "rss_before_kb": rss_before,
        "peak_rss_kb": _status_kb("VmHWM"),
        "worker_peak_rss_kb": worker_hwm[0],
        "rss_samples": samples,
        "db_mb": os.path.getsize(db) / 1e6,
    }


def child_extract(folder: str, model: str) -> dict:
    """Inside a fresh process: `extract_here` over the folder, serially; CPU of the loop alone.

    Images are kept when `model` reads them, as the pipeline's own extraction does.
    """
    import extractors
    import extractors.docx  # imports paid before the clock starts
    import extractors.pdf
    from extractors.errors import ExtractionError
    from kimidocs.core.models import get_model

    keep_images = get_model(model).images

    paths = sorted(str(p) for p in Path(folder).iterdir())
    ok = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        try:
            extractors.extract_here(p, keep_images=keep_images)
            ok += 1
        except ExtractionError:
            pass
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"files": len(paths), "ok": ok, "cpu_s": cpu, "wall_s": wall}


STAGES = (
    ("DuckDB", "kimidocs.store:Store", "*"),  # one row per Store method
    ("o200k tokenizer (load + counts)", "kimidocs.core.tokens", ("encoding", "count", "count_many")),
    ("Kimi client (httpx, JSON, retries; not the wait)", "kimidocs.kimi.client:KimiClient", ("chat",)),
    ("extraction hand-off (pipe + unpickle Document)", "extractors", ("extract",)),
    ("quality gate", "extractors", ("quality",)),
    ("sha256 of the file", "extractors", ("sha256_file",)),
    (
        "planning + cost estimate",
        "kimidocs.run.pipeline",
        ("plan_document", "page_tokens_of", "estimate_plan_cost"),
    ),
    ("citation check", "kimidocs.run.pipeline", ("check_citations",)),
    ("discover", "kimidocs.run.pipeline", ("discover",)),
)


def _instrument(stages: tuple = STAGES) -> dict[str, float]:
    """Wrap each stage's functions to charge their process CPU (exclusive of nested stages) to it.

    Only valid for a serial run in one thread (the stack is global); CPU of DuckDB's own threads
    during a store call is included, since process_time counts every thread of the process.
    """
    import importlib

    totals: dict[str, float] = {}
    stack: list[list] = []

    def wrap(label: str, fn: Callable) -> Callable:
        def timed(*a: object, **kw: object) -> object:
            stack.append([label, time.process_time(), 0.0])
            try:
                return fn(*a, **kw)
            finally:
                _label, start, nested = stack.pop()
                elapsed = time.process_time() - start
                totals[label] = totals.get(label, 0.0) + elapsed - nested
                if stack:
                    stack[-1][2] += elapsed

        return timed

    for label, where, names in stages:
        module, _, cls = where.partition(":")
        target = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(module)
        per_method = names == "*"
        if per_method:
            names = [n for n in vars(target) if not n.startswith("_") and callable(vars(target)[n])]
            names.append("__init__")
        for name in names:
            row = f"{label} `Store.{name}`" if per_method else label
            setattr(target, name, wrap(row, getattr(target, name)))
    return totals


def child_breakdown(folder: str, db: str, base_url: str, api_key: str) -> dict:
    """The run's stages serially in the main thread, each stage's CPU charged by `_instrument`."""
    from kimidocs.run import pipeline
    from kimidocs.run.settings import Settings

    settings = Settings(
        KIMI_API_KEY=api_key, KIMI_BASE_URL=base_url, KIMIDOCS_DB=db, KIMIDOCS_TIER="tier5", _env_file=None
    )
    totals = _instrument()
    c0 = time.process_time()
    ctx = pipeline.open_run(pipeline.RunOptions(folder=folder, db=db), settings)
    outcomes = [pipeline.analyze_file(ctx, f) for f in pipeline.list_files(ctx)]
    pipeline.close_run(ctx, outcomes)
    total = time.process_time() - c0
    return {"total_cpu_s": total, "stages": totals, "other_cpu_s": total - sum(totals.values())}


def child_profile(folder: str, db: str, base_url: str, api_key: str, top: int = 25) -> dict:
    """The run's stages serially in the main thread under cProfile (CPU clock): where our CPU goes.

    Same steps as `run_folder` without its thread pool (cProfile sees one thread only); extraction
    still runs in the worker processes, so their CPU is not in this profile.
    """
    import cProfile
    import io
    import pstats

    from kimidocs.run import pipeline
    from kimidocs.run.settings import Settings

    settings = Settings(
        KIMI_API_KEY=api_key, KIMI_BASE_URL=base_url, KIMIDOCS_DB=db, KIMIDOCS_TIER="tier5", _env_file=None
    )
    prof = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    prof.enable()
    ctx = pipeline.open_run(pipeline.RunOptions(folder=folder, db=db), settings)
    outcomes = [pipeline.analyze_file(ctx, f) for f in pipeline.list_files(ctx)]
    pipeline.close_run(ctx, outcomes)
    prof.disable()
    total = time.process_time() - c0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    rows = []
    for (file, line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"func": f"{Path(file).name}:{line}({name})", "file": file, "tottime": tt, "cumtime": ct})
    return {"profiled_cpu_s": total, "rows": rows, "text": buf.getvalue()}


# ---------------------------------------------------------------------------------------------- parent side


def in_child(mode: str, *args: str) -> dict:
    """Run one measurement in a fresh interpreter; its JSON answer plus the CPU of its whole tree."""
    before = _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t0
    result["tree_cpu_s"] = _cpu(resource.RUSAGE_CHILDREN) - before
    return result


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_run(emulator, folder: Path, db: Path, model: str) -> dict:
    e0 = proc_cpu_s(emulator.pid)
    row = in_child("run", str(folder), str(db), emulator.base_url, emulator.api_key, model)
    row["emulator_cpu_s"] = proc_cpu_s(emulator.pid) - e0
    return row


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def scale_table(rows: list[dict]) -> str:
    lines = [
        "| N | ok / failed | calls (reused) | wall s | docs/s | pipeline CPU s | workers CPU s (started) "
        "| CPU ms/doc | peak RSS pipeline MB | peak RSS worker MB | RSS at 25 % / 50 % / end MB | DB MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        samples = r["rss_samples"] or [(r["docs"], r["peak_rss_kb"])]
        pick = [samples[min(len(samples) - 1, int(len(samples) * q))][1] for q in (0.25, 0.5, 1.0)]
        lines.append(
            f"| {r['docs']} | {r['ok']} / {r['failed']} | {r['calls']} ({r['reused_calls']}) | "
            f"{r['wall_s']:.1f} | {r['docs'] / r['wall_s']:.1f} | {r['self_cpu_s']:.1f} | "
            f"{r['workers_cpu_s']:.1f} ({r['workers_started']}) | "
            f"{1000 * (r['self_cpu_s'] + r['workers_cpu_s']) / r['docs']:.0f} | {mb(r['peak_rss_kb'])} | "
            f"{mb(r['worker_peak_rss_kb'])} | {' / '.join(mb(k) for k in pick)} | {r['db_mb']:.1f} |"
        )
    return "\n".join(lines)


def long_table(rows: list[dict]) -> str:
    lines = [
        "| model | pages | strategy | calls | coverage | wall s | pipeline CPU s | worker CPU s "
        "| peak RSS pipeline MB | peak RSS worker MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cov = r["coverage"][0] if r["coverage"] else float("nan")
        lines.append(
            f"| {r['model']} | {r['pages']} | {', '.join(r['strategy'])} | {r['calls']} | {cov:.3f} | "
            f"{r['wall_s']:.1f} | {r['self_cpu_s']:.1f} | {r['workers_cpu_s']:.1f} | "
            f"{mb(r['peak_rss_kb'])} | {mb(r['worker_peak_rss_kb'])} |"
        )
    return "\n".join(lines)


def overhead_summary(run: dict, ext: dict, fixed: dict) -> dict:
    """Overhead as DESIGN §7 counts it, and without the per-run fixed costs (a one-memo run's CPU:
    tokenizer and DuckDB set-up, the first worker's start), which do not grow with the folder."""
    pipeline_cpu = run["self_cpu_s"] + run["workers_cpu_s"]
    fixed_cpu = fixed["self_cpu_s"] + fixed["workers_cpu_s"]
    return {
        "fixed_cpu_s": fixed_cpu,
        "overhead_without_fixed": (pipeline_cpu - fixed_cpu - ext["cpu_s"]) / ext["cpu_s"],
        "files": ext["files"],
        "extract_cpu_s": ext["cpu_s"],
        "pipeline_self_cpu_s": run["self_cpu_s"],
        "pipeline_workers_cpu_s": run["workers_cpu_s"],
        "pipeline_cpu_s": pipeline_cpu,
        "pipeline_import_cpu_s": run["import_cpu_s"],
        "workers_started": run["workers_started"],
        "emulator_cpu_s": run["emulator_cpu_s"],
        "wall_s": run["wall_s"],
        "overhead": (pipeline_cpu - ext["cpu_s"]) / ext["cpu_s"],
    }


def breakdown_table(b: dict) -> str:
    """Main-process CPU of a serial run, by stage (exclusive of nested stages)."""
    total = b["total_cpu_s"]
    lines = [
        f"main-process CPU of a serial run: {total:.2f} s",
        "| stage | CPU s | share |",
        "|---|---:|---:|",
    ]
    other = ("other (request building, map-reduce, records)", b["other_cpu_s"])
    rows = [*sorted(b["stages"].items(), key=lambda kv: -kv[1]), other]
    for label, cpu in rows:
        if cpu < 0.01 * total and label != other[0]:
            continue
        lines.append(f"| {label} | {cpu:.2f} | {100 * cpu / total:.0f} % |")
    return "\n".join(lines)


def profile_top(prof: dict, n: int = 15) -> str:
    """The heaviest functions by cumulative CPU, skipping the run's own wrappers."""
    skip = ("pipeline.py", "scale.py", "<listcomp>", "threading.py", "<built-in method builtins.exec>")
    rows = sorted(prof["rows"], key=lambda r: r["cumtime"], reverse=True)
    lines = ["| function | cum CPU s | own CPU s |", "|---|---:|---:|"]
    for r in [r for r in rows if not r["func"].startswith(skip)][:n]:
        lines.append(f"| `{r['func']}` | {r['cumtime']:.2f} | {r['tottime']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated document counts")
    parser.add_argument("--long-pages", type=int, default=1000)
    parser.add_argument(
        "--quick", action="store_true", help="sizes 20,60, a 100-page .txt, no Art run, no cProfile (~20 s)"
    )
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="overhead runs per folder (CPU is noisy)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [20, 60] if args.quick else [int(s) for s in args.sizes.split(",") if s]

    from kimidocs.emulator import EmulatorConfig, start_emulator_process

    work = Path(tempfile.mkdtemp(prefix="kimidocs-scale-bench-"))
    emulator = start_emulator_process(EmulatorConfig(), workdir=work / "emulator")
    results: dict = {"sizes": sizes, "scale": [], "long": [], "overhead": []}
    started = time.perf_counter()
    try:
        if not args.skip_scale:
            for n in sizes:
                folder = work / f"small-{n}"
                kinds = make_small_folder(folder, n)
                row = measured_run(emulator, folder, work / f"small-{n}.duckdb", "kimi-k2.5")
                row["kinds"] = kinds
                results["scale"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "rss_samples"}), flush=True)
        if not args.skip_long:
            folder = work / "long"
            t0 = time.perf_counter()
            if args.quick:
                make_long_txt(folder / "long-100p.txt", 100)
            else:
                make_long_pdf(folder / f"long-{args.long_pages}p.pdf", args.long_pages)
            results["long_build_s"] = time.perf_counter() - t0
            for model in ("kimi-k2.5", "kimidocs-test-32k"):
                row = measured_run(emulator, folder, work / f"long-{model}.duckdb", model)
                row["model"] = model
                results["long"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "rss_samples"}), flush=True)
        if not args.skip_overhead:
            tiny = work / "tiny"
            make_small_folder(tiny, 1)
            fixed = measured_run(emulator, tiny, work / "tiny.duckdb", "kimi-k2.5")
            results["fixed"] = fixed
            results["overhead"] = []
            variants = [False] if args.quick else [False, True]
            for rep, with_art in enumerate(variants * args.repeat):  # alternated: others' load hits both
                folder = work / ("corpus+art" if with_art else "corpus")
                if not folder.exists():
                    corpus_folder(folder, with_art)
                run = measured_run(emulator, folder, work / f"{folder.name}-{rep}.duckdb", "kimi-k2.5")
                ext = in_child("extract", str(folder), "kimi-k2.5")
                row = overhead_summary(run, ext, fixed)
                row["folder"] = "corpus pdf/ + docx/" + (" + The-Art-of-Public-Speaking" if with_art else "")
                results["overhead"].append(row)
                print(json.dumps(row), flush=True)
            if not args.quick:
                folder = work / "corpus"
                prof = in_child(
                    "profile", str(folder), str(work / "profile.duckdb"), emulator.base_url, emulator.api_key
                )
                results["profile"] = {k: v for k, v in prof.items() if k != "text"}
                results["profile_text"] = prof["text"]
            results["breakdown"] = in_child(
                "breakdown",
                str(work / "corpus"),
                str(work / "breakdown.duckdb"),
                emulator.base_url,
                emulator.api_key,
            )
    finally:
        emulator.stop()
    results["total_s"] = time.perf_counter() - started
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> str:
    parts = []
    if results["scale"]:
        parts += ["scale (small documents, kimi-k2.5):", scale_table(results["scale"]), ""]
    if results["long"]:
        parts += ["long document alone:", long_table(results["long"]), ""]
    for o in results["overhead"] or []:
        parts.append(
            f"{o['folder']}: {o['files']} files; fixed CPU of a run {o['fixed_cpu_s']:.2f} s; overhead "
            f"without it {100 * o['overhead_without_fixed']:.0f} %"
        )
        parts.append(
            f"overhead over {o['files']} corpus files: pipeline CPU {o['pipeline_cpu_s']:.2f} s "
            f"(process {o['pipeline_self_cpu_s']:.2f} + {o['workers_started']} workers "
            f"{o['pipeline_workers_cpu_s']:.2f}; imports before the run {o['pipeline_import_cpu_s']:.2f}) vs "
            f"extraction {o['extract_cpu_s']:.2f} s -> overhead {100 * o['overhead']:.0f} % "
            f"(emulator {o['emulator_cpu_s']:.2f} s, wall {o['wall_s']:.1f} s)"
        )
    if "breakdown" in results:
        parts += ["", breakdown_table(results["breakdown"])]
    if "profile" in results:
        parts += [f"profile (main thread, CPU {results['profile']['profiled_cpu_s']:.2f} s):"]
        parts += [profile_top(results["profile"])]
    parts.append(f"total {results['total_s']:.0f} s")
    return "\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        mode, rest = sys.argv[2], sys.argv[3:]
        if mode == "run":
            answer = child_run(*rest)
        elif mode == "extract":
            answer = child_extract(*rest)
        elif mode == "breakdown":
            answer = child_breakdown(*rest)
        else:
            answer = child_profile(*rest)
        print(json.dumps(answer))
    else:
        main()
