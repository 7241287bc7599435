"""What Prefect costs per document: the same folder through `pipeline.run_folder` and through the flow.

    .venv/bin/python bench/flow_overhead.py [--docs 200] [--small 20] [--out results.json]

A folder of small generated .txt files (one Kimi call each) is analysed against the emulator (its own
process, zero latency) into a fresh DuckDB per run, in four modes, each in a fresh Python process:

    direct           kimidocs.run.pipeline.run_folder, no Prefect at all
    ephemeral        the analyze-folder flow without PREFECT_API_URL (a temporary server per process)
    server           the flow against a running `prefect server` (shared Kimi limits on: 3 API calls/call)
    server-nolimits  the same with KIMIDOCS_SHARED_LIMITS=0

Every mode runs twice, with `--docs` and `--small` documents; the difference removes fixed costs
(imports, server start, run bookkeeping) and leaves the marginal cost per document. Reported: wall of
the run inside the process, wall and CPU (user+sys) of the whole process tree, and the Prefect server's
CPU during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODES = ("direct", "ephemeral", "server", "server-nolimits")
TICKS = os.sysconf("SC_CLK_TCK")

WORDS = [
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
]


def make_folder(folder: Path, n: int) -> Path:
    """`n` small distinct memos (~1,200 characters each: one call, no map-reduce)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        paras = []
        for p in range(4):
            words = [WORDS[(i * 13 + p * 7 + k * k) % len(WORDS)] for k in range(45)]
            paras.append(f"Memo {i}, part {p}: " + " ".join(words) + f". Total {1000 + i * 17 + p} EUR.")
        (folder / f"memo-{i:04d}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return folder


def child(mode: str, folder: str, db: str) -> None:
    """Runs inside the measured process: one analysis, prints its in-process wall time as JSON."""
    t0 = time.perf_counter()
    if mode == "direct":
        from kimidocs.run import pipeline

        report = pipeline.run_folder(pipeline.RunOptions(folder=folder, db=db, concurrency=4))
        ok = report.count("ok")
    else:
        from flows.analyze import analyze_folder

        ok = analyze_folder(folder=folder, db=db, concurrency=4)["ok"]
    print(json.dumps({"run_s": time.perf_counter() - t0, "ok": ok}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """user + sys CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KIMI_", "KIMIDOCS_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--analytics-off",
        ],
        env=base_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("prefect server did not start")


def measure(mode: str, folder: Path, db: Path, env: dict[str, str], server_pid: int | None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = proc_cpu_s(server_pid) if server_pid else 0.0
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(folder), str(db)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "mode": mode,
        "docs": sum(1 for _ in folder.iterdir()),
        "ok": result["ok"],
        "run_s": round(result["run_s"], 2),
        "process_wall_s": round(wall, 2),
        "process_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "server_cpu_s": round(proc_cpu_s(server_pid) - server_before, 2) if server_pid else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from kimidocs.emulator import EmulatorConfig, start_emulator_process

    work = Path(tempfile.mkdtemp(prefix="kimidocs-flow-bench-"))
    emulator = start_emulator_process(EmulatorConfig(), workdir=work / "emulator")
    server: subprocess.Popen | None = None
    rows = []
    try:
        if any(m.startswith("server") for m in args.modes):
            server, url = start_server(work / "server-home")
        for n in (args.small, args.docs):
            folder = make_folder(work / f"docs-{n}", n)
            for mode in args.modes:
                home = work / f"home-{mode}-{n}"
                home.mkdir()
                env = base_env(home) | emulator.worker_env()
                if mode.startswith("server"):
                    env["PREFECT_API_URL"] = url
                if mode == "server-nolimits":
                    env["KIMIDOCS_SHARED_LIMITS"] = "0"
                row = measure(
                    mode,
                    folder,
                    work / f"{mode}-{n}.duckdb",
                    env,
                    server.pid if mode.startswith("server") and server else None,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        emulator.stop()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    summary = summarise(rows, args.small, args.docs)
    print(table(rows, summary))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def summarise(rows: list[dict], small: int, big: int) -> dict[str, dict]:
    """Marginal ms per document of each mode, and its overhead over `direct`."""
    by = {(r["mode"], r["docs"]): r for r in rows}
    out: dict[str, dict] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        if (mode, small) not in by or (mode, big) not in by:
            continue
        a, b = by[(mode, small)], by[(mode, big)]
        span = big - small
        out[mode] = {
            "wall_ms_per_doc": 1000 * (b["run_s"] - a["run_s"]) / span,
            "cpu_ms_per_doc": 1000 * (b["process_cpu_s"] - a["process_cpu_s"]) / span,
            "server_cpu_ms_per_doc": (
                1000 * (b["server_cpu_s"] - a["server_cpu_s"]) / span
                if b["server_cpu_s"] is not None
                else None
            ),
        }
    if "direct" in out:
        for vals in out.values():
            vals["overhead_wall_ms_per_doc"] = vals["wall_ms_per_doc"] - out["direct"]["wall_ms_per_doc"]
            cpu = vals["cpu_ms_per_doc"] + (vals["server_cpu_ms_per_doc"] or 0.0)
            vals["overhead_cpu_ms_per_doc"] = cpu - out["direct"]["cpu_ms_per_doc"]
    return out


def table(rows: list[dict], summary: dict[str, dict]) -> str:
    lines = [
        "| mode | docs | run wall s | process wall s | process CPU s | server CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        server = "" if r["server_cpu_s"] is None else f"{r['server_cpu_s']:.1f}"
        lines.append(
            f"| {r['mode']} | {r['docs']} | {r['run_s']:.1f} | {r['process_wall_s']:.1f} | "
            f"{r['process_cpu_s']:.1f} | {server} |"
        )
    lines += [
        "",
        "| mode | wall ms/doc | CPU ms/doc (+ server) | overhead vs direct: wall ms/doc | CPU ms/doc |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, v in summary.items():
        server = f" + {v['server_cpu_ms_per_doc']:.0f}" if v["server_cpu_ms_per_doc"] is not None else ""
        lines.append(
            f"| {mode} | {v['wall_ms_per_doc']:.0f} | {v['cpu_ms_per_doc']:.0f}{server} | "
            f"{v.get('overhead_wall_ms_per_doc', 0):.0f} | {v.get('overhead_cpu_ms_per_doc', 0):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
