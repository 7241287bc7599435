"""The store on a DuckLake (catalog in a real PostgreSQL, data files in a folder): the same schema,
views and idempotent writes as a DuckDB file, the whole pipeline, search, the run lock across processes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest
from lake_fixture import Lake
from test_store import _doc, _file, _row
from typer.testing import CliRunner

from kimidocs.cli import app
from kimidocs.run import pipeline
from kimidocs.run.settings import Settings
from kimidocs.store import DatabaseMissing, DatabaseUnusable, RunLock, Store, shown_db
from kimidocs.store import migrate as migrations
from kimidocs.store.extensions import extension_path
from kimidocs.store.lake import DUCKLAKE_SETTINGS
from kimidocs.store.lake_sql import UnsupportedOnLake, translate
from kimidocs.store.location import LakeLocation, redact

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
COUNTS = {
    "documents": "SELECT count(*) FROM documents",
    "pages": "SELECT count(*) FROM pages",
    "files": "SELECT count(*) FROM files",
    "summaries": "SELECT count(*) FROM summaries",
    "calls": "SELECT count(*) FROM calls",
}


def _columns(store: Store) -> dict[str, list[tuple[str, str]]]:
    """Each table's and view's columns as a query sees them (name, type)."""
    return {
        name: [(r[0], r[1]) for r in store.query(f'DESCRIBE SELECT * FROM "{name}"').rows]
        for name, _kind in store.relations()
    }


# ---------------------------------------------------------------------- pure parts


def test_translation_leaves_no_key_or_index_in_any_shipped_migration() -> None:
    for mig in migrations.available():
        sql = translate(mig.sql)
        assert not re.search(r"\b(PRIMARY\s+KEY|UNIQUE|INDEX)\b", sql, re.IGNORECASE), mig.name
    assert "NOT NULL" in translate("CREATE TABLE t (a VARCHAR PRIMARY KEY, b INT)")
    assert translate("CREATE TABLE t (a INT NOT NULL, b INT NOT NULL, PRIMARY KEY (a, b));").count("(") == 1
    with pytest.raises(UnsupportedOnLake):
        translate("INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING")


def test_a_password_in_the_location_is_never_shown() -> None:
    db = "ducklake:postgres:dbname=k host=db.internal user=u password='s3 cret'"
    assert "s3" not in str(LakeLocation.parse(db)) and "s3" not in repr(LakeLocation.parse(db))
    assert "s3" not in shown_db(db) and "dbname=k" in shown_db(db)
    assert (
        redact("ducklake:postgres:postgresql://u:hunter2@h/k") == "ducklake:postgres:postgresql://u:***@h/k"
    )
    assert "hunter2" not in str(Store(db.replace("'s3 cret'", "hunter2")))
    url = "ducklake:postgres:postgresql://u@h:5432/k"
    assert LakeLocation.parse(Path(url)).conninfo == "postgresql://u@h:5432/k"  # as KIMIDOCS_DB gives it


def test_every_extension_comes_from_its_wheel_and_kimidocs_where_prints_it() -> None:
    for name in ("fts", "ducklake", "postgres_scanner"):
        assert extension_path(name).name == f"{name}.duckdb_extension"
        shown = CliRunner().invoke(app, ["where", name])
        assert shown.exit_code == 0 and Path(shown.output.strip()).is_file(), shown.output


# ---------------------------------------------------------------------- schema


def test_a_lake_not_created_yet_is_missing_for_readers_and_needs_a_data_path(lake: Lake) -> None:
    with pytest.raises(DatabaseMissing):
        Store(lake.db, read_only=True).query("SELECT 1")
    with pytest.raises(DatabaseUnusable, match="KIMIDOCS_LAKE_DATA_PATH") as failed:
        Store(lake.db + " password=hunter2").migrate()
    assert "hunter2" not in str(failed.value) and "password=***" in str(failed.value)


def test_migrations_build_the_same_tables_columns_and_views_as_a_duckdb_file(
    lake: Lake, tmp_path: Path
) -> None:
    store = Store(lake.db, data_path=lake.data_path)
    shipped = [m.version for m in migrations.available()]
    assert store.migrate() == shipped
    assert store.schema_version() == max(shipped)
    assert Store(lake.db).migrate() == []  # a second process finds it done
    file_store = Store(tmp_path / "k.duckdb")
    file_store.migrate()
    assert store.relations() == file_store.relations()
    assert _columns(store) == _columns(file_store)
    for name, kind in store.relations():
        if kind == "view":
            assert store.query(f'SELECT count(*) FROM "{name}"').rows == ((0,),), name
    assert store.query("SELECT count(*) FROM model_prices").rows[0][0] > 0
    store.close()
    file_store.close()


def test_writes_replace_by_natural_key_on_a_lake(lake: Lake) -> None:
    store = Store(lake.db, data_path=lake.data_path)
    doc = _doc(pages=3)
    for _ in range(2):
        store.save_document(doc, _file(doc))
        store.save_summary(_row(), document_status="summarized")
        store.touch_file(_file(doc))
    first_seen = store.query("SELECT first_seen FROM files").rows
    store.touch_file(_file(doc))
    assert store.query("SELECT first_seen FROM files").rows == first_seen  # kept by the upsert
    assert [store.query(sql).rows[0][0] for sql in COUNTS.values()] == [1, 3, 1, 1, 0]
    assert store.query("SELECT status FROM documents").rows == (("summarized",),)
    retries = "SELECT current_setting('ducklake_max_retry_count')"
    assert store.query(retries).rows == ((DUCKLAKE_SETTINGS["ducklake_max_retry_count"],),)
    assert store.has_summary("d1", "summary", "v1", _row().model)
    store.close()


def test_a_transaction_that_loses_a_conflict_is_run_again_whole(lake: Lake) -> None:
    """Two writers of different documents: DuckLake conflicts per table, and the loser's whole
    transaction runs again on the new snapshot (both rows end up stored once)."""
    first, second = Store(lake.db, data_path=lake.data_path), Store(lake.db)
    for doc_id in ("x", "y"):
        doc = _doc(doc_id, pages=1, path=f"in/{doc_id}.pdf")
        first.save_document(doc, _file(doc))
    tries = 0
    for attempt in first._attempts():
        with attempt, first._write("documents:x") as con:
            tries += 1
            con.execute("UPDATE documents SET status = 'x-done' WHERE doc_id = 'x'")
            if tries == 1:  # another machine commits a change to the same table meanwhile
                second.set_document_status("y", "y-done")
    assert tries == 2 and first.lake is not None and first.lake.conflicts == 1
    assert first.query("SELECT doc_id, status FROM documents ORDER BY doc_id").rows == (
        ("x", "x-done"),
        ("y", "y-done"),
    )
    first.close()
    second.close()


# ---------------------------------------------------------------------- the pipeline


def _analyze(folder: Path, db: str, emulator, lake: Lake | None = None) -> pipeline.RunReport:
    settings = Settings(
        KIMI_API_KEY=emulator.api_key,
        KIMI_BASE_URL=emulator.base_url,
        KIMIDOCS_DB=db,
        KIMIDOCS_LAKE_DATA_PATH=lake.data_path if lake else None,
        _env_file=None,
    )
    return pipeline.run_folder(pipeline.RunOptions(folder=str(folder), db=db), settings)


def _counts(store: Store) -> dict[str, int]:
    return {name: int(store.query(sql).rows[0][0]) for name, sql in COUNTS.items()}


def test_a_run_on_a_lake_stores_what_a_run_on_a_file_stores_and_a_rerun_pays_nothing(
    lake: Lake, tmp_path: Path, kimi_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the lake's local search replica goes here
    folder = tmp_path / "inbox"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    file_db = tmp_path / "k.duckdb"
    on_file = _analyze(folder, str(file_db), kimi_emulator)
    on_lake = _analyze(folder, lake.db, kimi_emulator, lake)
    assert [o.status for o in on_lake.outcomes] == [o.status for o in on_file.outcomes]
    assert "dbname=" in on_lake.db and not on_lake.db.startswith("/")  # shown as the lake, not a path
    store = Store(lake.db, read_only=True)
    with Store(file_db, read_only=True) as file_store:
        expected = _counts(file_store)
    assert _counts(store) == expected and expected["summaries"] == 5

    again = _analyze(folder, lake.db, kimi_emulator, lake)
    assert sum(o.calls for o in again.outcomes) == 0
    assert _counts(store) == expected  # no duplicate, no new call
    for key, table in (("doc_id", "documents"), ("path", "files"), ("doc_id, profile", "summaries")):
        dup = f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
        assert store.query(dup).rows == ((0,),), table

    hits = store.search("misfits rebels", limit=3)  # crazyones.pdf
    assert [Path(h.path or "").name for h in hits] == ["crazyones.pdf"]

    runner = CliRunner()
    runs = runner.invoke(app, ["runs", "--db", lake.db, "--format", "csv"])
    assert runs.exit_code == 0, runs.output
    assert runs.output.count("completed") == 2
    query = runner.invoke(
        app, ["query", "SELECT count(*) AS n FROM latest_summaries", "--db", lake.db, "-f", "csv"]
    )
    assert query.exit_code == 0 and query.output.split() == ["n", "5"], query.output
    export = runner.invoke(app, ["export", str(tmp_path / "out"), "--db", lake.db])
    assert export.exit_code == 0, export.output
    assert (tmp_path / "out" / "summaries.parquet").is_file()
    store.close()


# ---------------------------------------------------------------------- search


def test_search_over_a_lake_uses_a_local_replica_rebuilt_when_the_lake_changed(
    lake: Lake, tmp_path: Path
) -> None:
    store = Store(lake.db, data_path=lake.data_path, search_cache=tmp_path / "cache")
    doc = _doc("d1", pages=2)
    store.save_document(doc, _file(doc))
    assert [h.page_no for h in store.search("invoices")] == [1, 2]
    other = Store(lake.db, search_cache=tmp_path / "cache")  # another writer adds a document
    new = _doc("d2", pages=1, path="in/b.pdf")
    other.save_document(new, _file(new))
    assert {h.doc_id for h in store.search("invoices")} == {"d1", "d2"}
    assert store.search("zebra") == []
    other.close()
    store.close()


# ---------------------------------------------------------------------- the run lock

HOLDER = textwrap.dedent(
    """
    import sys
    from kimidocs.store import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire("run=first")
    print("held", flush=True)
    sys.stdin.readline()
    """
)


def test_a_second_run_on_a_lake_waits_for_the_first_in_another_process(lake: Lake) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, lake.db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        told: list[str] = []
        waiting = threading.Event()

        def on_wait(message: str) -> None:
            told.append(message)
            waiting.set()

        second = RunLock(lake.db)
        taker = threading.Thread(target=second.acquire, args=("run=second", on_wait))
        taker.start()
        assert waiting.wait(timeout=30) and not second.held
        assert "run=first" in told[0] and "dbname=" in told[0]
        holder.kill()  # SIGKILL: the server ends its session, and its advisory lock with it
        taker.join(timeout=30)
        assert second.held
        second.release()
        assert not second.held
    finally:
        holder.kill()
        holder.wait()


def test_analysts_attach_the_lake_read_only_with_the_readme_lines(lake: Lake) -> None:
    Store(lake.db, data_path=lake.data_path).migrate()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in ("ducklake", "postgres_scanner"):
        con.execute(f"LOAD '{extension_path(name).as_posix()}'")
    con.execute(f"ATTACH '{lake.db}' AS lake (READ_ONLY)")
    assert con.execute("SELECT count(*) FROM lake.latest_summaries").fetchone() == (0,)
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO lake.runs (run_id, started_at, status) VALUES ('x', now(), 'running')")
    con.close()
