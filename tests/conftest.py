"""Shared fixtures: where the corpus is, the emulator as a real server on a loopback port."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

pytest_plugins = ["emulator_fixture", "prefect_fixture", "postgres_fixture", "redis_fixture", "lake_fixture"]

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("KIMIDOCS_CORPUS", REPO.parent / "shared" / "corpus"))


#: Whole files that take more than a few seconds (long documents, the corpus, real processes).
SLOW_FILES = frozenset(
    {
        "test_long_documents.py",
        "test_dry_run_corpus.py",
        "test_store_concurrency.py",
        "test_secrets.py",
        "test_resume.py",
        "test_two_runs.py",
        "test_batch_mode.py",  # batches go through rounds of polling
        "test_bad_settings.py",  # 16 CLI subprocesses
        "test_cli_extract.py",  # CLI subprocesses
        "test_redis_limits.py",  # a Redis server, worker processes, three CLI runs against tier0
        "test_batch_nightly.py",  # deployments, workers, follow-up flow runs
        "test_store_lake.py",  # a real DuckLake on PostgreSQL, a pipeline run, processes
        "test_store_lake_concurrency.py",  # three writer processes on one lake
        "test_prefect_postgres.py",  # PostgreSQL + a Prefect server on it + a worker (~45 s)
        "test_worker_failure.py",  # 3 workers, 90 documents, a killed machine, zombie detection (~2.5 min)
        "test_servers_from_wheels.py",  # PostgreSQL and Redis servers
    }
)
#: Single tests of a few seconds each (a subprocess CLI run, a second emulator process, hypothesis suites).
SLOW_TESTS = frozenset(
    {
        "test_messy_outputs_never_change_column_types",
        "test_messy_answers_never_change_view_column_types",
        "test_chunks_fit_cover_every_page_once_in_order_and_never_cut_words",
        "test_piped_output_is_not_cut_at_80_columns",
        "test_lying_zip_header_is_read_in_bounded_chunks",
        "test_a_partial_document_is_retried_paying_only_for_the_missing_chunk",
        "test_cli_run_with_a_newline_key_works_and_never_shows_it",
        "test_separate_process_with_jsonl_log",
        "test_extract_command_has_the_time_bound_of_analyze",
        "test_batches_work_against_the_emulator_in_its_own_process",
        "test_unusable_pack_answer_sends_its_documents_alone",
        "test_failed_task_is_recorded_and_alone_rerun",
        "test_reduce_tree_terminates_with_every_group_within_budget",
        "test_a_folder_warms_the_system_prompt_with_its_first_call_then_fans_out",
        "test_map_calls_sharing_only_a_warm_system_prompt_start_together",
    }
)
PREFECT_FIXTURES = frozenset(
    {"prefect_server", "prefect_api", "deployed", "batch", "prefect_server_pg", "pg_api"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` for what `make test-fast` leaves out: the files above, the long PDFs (extracted once per
    session, ~2 minutes), and every test that needs a Prefect server (also marked `prefect_server`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & PREFECT_FIXTURES:
            item.add_marker(pytest.mark.prefect_server)
        if (
            item.path.name in SLOW_FILES
            or getattr(item, "originalname", item.name) in SLOW_TESTS
            or fixtures & PREFECT_FIXTURES
            or any(long in item.nodeid for long in LONG_PDFS)
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _clean_kimidocs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's KIMI_* / KIMIDOCS_* variables or `.env` file reach a test (as httpx's
    `clean_environ` does): a key in a shell must not turn an emulator test into a paid call."""
    for name in list(os.environ):
        if name.startswith(("KIMI_", "KIMIDOCS_")) and name != "KIMIDOCS_CORPUS":
            monkeypatch.delenv(name)
    from kimidocs.run.settings import Settings

    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(autouse=True)
def _search_index_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-text index files (kimidocs/store/search_index.py) go to the session's temporary folder, not to
    ~/.cache/kimidocs/search."""
    from kimidocs.store import store

    folder = tmp_path_factory.getbasetemp() / "search-index"
    monkeypatch.setattr(store, "default_cache_dir", lambda: folder)


def manifest_rows() -> list[dict[str, str]]:
    """Rows of ../shared/corpus/MANIFEST.tsv (every file a correct extractor must handle)."""
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


LONG_PDFS = ("pdf/public-speaking-x2.pdf", "pdf/The-Art-of-Public-Speaking.pdf")
_extracted: dict[str, object] = {}


def extracted(rel: str):  # -> Document | ExtractionError
    """Each corpus file extracted at most once per test session, shared by every test module.

    The long PDFs (about 40 s and 20 s with pypdf) are extracted together on both cores with
    `extract_many`; an extraction error is cached and returned, not raised.
    """
    import extractors
    from extractors.errors import ExtractionError

    if rel in LONG_PDFS and rel not in _extracted:
        paths = {str(CORPUS / r): r for r in LONG_PDFS}
        for path, result in extractors.extract_many(list(paths), workers=2):
            _extracted[paths[path]] = result
    if rel not in _extracted:
        try:
            _extracted[rel] = extractors.extract(CORPUS / rel)
        except ExtractionError as exc:
            _extracted[rel] = exc
    return _extracted[rel]


def run_pipeline(folder: Path, db: Path, emulator, **options):  # -> pipeline.RunReport
    """`kimidocs analyze` as a function: settings -> open_backend -> the emulator over a socket.

    A loopback base URL with its key gives a real KimiClient labelled backend='emulator'.
    """
    from kimidocs.run import pipeline
    from kimidocs.run.settings import Settings

    settings = Settings(
        KIMI_API_KEY=emulator.api_key, KIMI_BASE_URL=emulator.base_url, KIMIDOCS_DB=str(db), _env_file=None
    )
    return pipeline.run_folder(pipeline.RunOptions(folder=str(folder), db=str(db), **options), settings)


def db_rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Read a finished run's DuckDB file as an analyst would (read-only)."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"corpus not found at {CORPUS} (set KIMIDOCS_CORPUS)")
    return CORPUS
