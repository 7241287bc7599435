"""Long documents end to end against the emulator: map-reduce in levels, citations, coverage.

Each run goes through `pipeline.run_folder` (real extraction, real DuckDB, real HTTP), once with a
small test window that forces map-reduce with several reduce levels and once with the real
kimi-k2.5 window; a generated 3-million-token text still needs map-reduce under kimi-k3's 1M window.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import db_rows, run_pipeline

from kimidocs.run import pipeline

LONG = ("pdf/The-Art-of-Public-Speaking.pdf", "docx/handbook-872p.docx")


def _run(folder: Path, db: Path, handle, model: str) -> pipeline.RunReport:
    return run_pipeline(folder, db, handle, model=model, concurrency=2)


def _query(db: Path, sql: str) -> list[tuple]:
    return db_rows(db, sql)


def _check_citations(db: Path, model: str) -> None:
    """Every cited page exists, citations spread over the document, evidence is on its page."""
    rows = _query(
        db,
        f"""SELECT s.doc_id, s.pages_total, s.coverage, page
            FROM summaries s, unnest(s.key_points) AS k(kp), unnest(kp.pages) AS p(page)
            WHERE s.model = '{model}'""",
    )
    assert rows
    by_doc: dict[str, set[int]] = {}
    for doc_id, total, coverage, page in rows:
        assert coverage == 1.0
        assert 1 <= page <= total
        by_doc.setdefault(doc_id, set()).add(page)
    totals = dict(_query(db, f"SELECT doc_id, pages_total FROM summaries WHERE model = '{model}'"))
    for doc_id, pages in by_doc.items():
        # citations reach the second half of the document: the reduce kept them from every chunk
        assert max(pages) > totals[doc_id] / 2, (doc_id, sorted(pages))
    evidence = _query(
        db,
        f"""SELECT count(*) FILTER (WHERE contains(pg.text, kp.evidence)), count(*)
            FROM summaries s, unnest(s.key_points) AS k(kp), unnest(kp.pages) AS p(page), pages pg
            WHERE s.model = '{model}' AND kp.evidence IS NOT NULL AND kp.evidence <> ''
              AND pg.doc_id = s.doc_id AND pg.page_no = page""",
    )[0]
    assert evidence[1] > 0 and evidence[0] == evidence[1]


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory, corpus: Path) -> Path:
    folder = tmp_path_factory.mktemp("long")
    for rel in LONG:
        shutil.copy(corpus / rel, folder)
    return folder


def test_small_window_forces_map_reduce_with_reduce_levels(
    long_folder: Path, tmp_path: Path, kimi_emulator
) -> None:
    db = tmp_path / "k.duckdb"
    report = _run(long_folder, db, kimi_emulator, "kimidocs-test-8k")
    assert {o.status for o in report.outcomes} == {"ok"}, report.outcomes
    assert {o.strategy for o in report.outcomes} == {"map_reduce"}
    levels = dict(_query(db, "SELECT doc_id, max(level) FROM calls WHERE stage = 'reduce' GROUP BY doc_id"))
    assert len(levels) == 2 and min(levels.values()) >= 2, levels
    maps, hits = _query(
        db, "SELECT count(*), count(*) FILTER (WHERE cached_tokens > 0) FROM calls WHERE stage = 'map'"
    )[0]
    assert maps >= 80
    assert (
        hits >= 0.9 * maps
    )  # all but the first of each prefix group read the fixed system prefix from the cache
    _check_citations(db, "kimidocs-test-8k")


def test_real_kimi_window_reads_each_long_document(long_folder: Path, tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    report = _run(long_folder, db, kimi_emulator, "kimi-k2.5")
    assert {o.status for o in report.outcomes} == {"ok"}, report.outcomes
    for o in report.outcomes:
        assert o.coverage == 1.0
        assert o.prompt_tokens > 150_000  # the whole book went in, not a truncated part
    # no request over the window: the emulator would have answered 400
    statuses = {r["status"] for r in kimi_emulator.requests("/chat/completions")}
    assert statuses == {200}
    _check_citations(db, "kimi-k2.5")


def test_three_million_tokens_still_map_reduce_under_a_1m_window(tmp_path: Path, kimi_emulator) -> None:
    folder = tmp_path / "gen"
    folder.mkdir()
    sentence = "Clause {n} binds the parties to deliver {n} units by March {d}, 2027 for USD {n},000. "
    paragraphs = (
        "".join(sentence.format(n=i * 10 + j, d=1 + j % 28) for j in range(10)) for i in range(11_000)
    )
    (folder / "generated.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    db = tmp_path / "k.duckdb"
    report = _run(folder, db, kimi_emulator, "kimi-k3")
    (outcome,) = report.outcomes
    assert outcome.status == "ok", outcome
    assert outcome.strategy == "map_reduce"
    assert outcome.coverage == 1.0
    (total_tokens,) = _query(db, "SELECT tokens_est FROM documents")[0]
    assert total_tokens > 3_000_000
    (maps,) = _query(db, "SELECT count(*) FROM calls WHERE stage = 'map'")[0]
    assert maps >= 3
    _check_citations(db, "kimi-k3")
