"""Packing small documents when RPM binds: pure sizing, then the pipeline against a Tier0 emulator.

The emulator and our limiter run Tier0 (1 concurrent, 3 RPM) on a minute compressed 100x; every
document must still end with its own summary row citing its own pages, as if it had been read alone.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pytest

from kimidocs.core.models import get_model
from kimidocs.core.packing import (
    PackBuilder,
    PackPolicy,
    is_small,
    pack_content_limit,
    pack_output_tokens,
    packing_pays,
    plan_packs,
    split_usage,
)
from kimidocs.core.planning import budget_for
from kimidocs.core.records import Usage
from kimidocs.core.results import normalize_for_match
from kimidocs.kimi.client import KimiClient
from kimidocs.kimi.limits import RateLimiter, RateLimits
from kimidocs.run import pipeline
from kimidocs.run.backend import Backend
from kimidocs.run.report import report_markdown
from kimidocs.run.settings import Settings
from prompts import load_profile

SCALE = 0.01  # an emulated minute lasts 0.6 s
MODEL = get_model("kimi-k2.5")
BUDGET = budget_for(MODEL, load_profile("summary"))

# --- pure -------------------------------------------------------------------------------------------------


def test_packing_pays_only_where_rpm_binds():
    lone = 6_000  # prompt + max_tokens of a small document read alone
    assert packing_pays(RateLimits.for_tier("tier0"), lone)  # 3 x 6k = 18k of 500k TPM
    assert not packing_pays(RateLimits.for_tier("tier1"), lone)  # 200 x 6k = 1.2M of 2M TPM
    assert not packing_pays(RateLimits.for_tier("tier3"), lone)
    assert not packing_pays(RateLimits(concurrency=4), lone)  # no RPM limit
    assert not packing_pays(None, lone)
    assert packing_pays(RateLimits(concurrency=4, rpm=10), lone)  # RPM and no TPM


def test_groups_respect_document_and_token_caps():
    policy = PackPolicy(max_docs=4, max_pack_tokens=10_000)
    sizes = [3_000, 3_000, 3_000, 3_000, 500, 500, 500, 500, 500, 9_500]
    groups = plan_packs(sizes, BUDGET, MODEL, policy)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))  # every document, once
    assert groups == [(0, 1, 2), (3, 4, 5, 6), (7, 8), (9,)]
    for g in groups:
        assert len(g) <= 4
        assert sum(sizes[i] for i in g) <= pack_content_limit(len(g), BUDGET, MODEL, policy)


def test_pack_output_and_window_room():
    assert pack_output_tokens(1, BUDGET, MODEL) == BUDGET.max_output_tokens
    assert pack_output_tokens(8, BUDGET, MODEL) == 8 * 1_024
    small = get_model("kimidocs-test-8k")
    tight = budget_for(small, load_profile("summary"))
    limit = pack_content_limit(2, tight, small)
    # prompt text + the pack's larger max_tokens still fit where a lone call's did
    assert limit + pack_output_tokens(2, tight, small) <= tight.chunk_tokens + tight.max_output_tokens
    assert is_small(500, BUDGET) and not is_small(50_000, BUDGET)


def test_builder_returns_full_groups_as_they_fill():
    builder: PackBuilder[int] = PackBuilder(lambda n: n, BUDGET, MODEL, PackPolicy(max_docs=3))
    assert builder.add(100) is None and builder.add(100) is None
    assert builder.add(100) == (100, 100, 100)
    assert builder.add(7) is None
    assert builder.flush() == (7,) and builder.flush() == ()


def test_split_usage_sums_exactly():
    rng = random.Random(4)
    for _ in range(200):
        weights = [rng.randint(0, 5_000) for _ in range(rng.randint(1, 8))]
        prompt = rng.randint(0, 100_000)
        usage = Usage(prompt, rng.randint(0, prompt), rng.randint(0, 9_000))
        parts = split_usage(usage, weights)
        assert sum(p.prompt_tokens for p in parts) == usage.prompt_tokens
        assert sum(p.completion_tokens for p in parts) == usage.completion_tokens
        assert all(0 <= p.cached_tokens <= p.prompt_tokens for p in parts)
        assert sum(p.cached_tokens for p in parts) <= usage.cached_tokens


# --- pipeline against a Tier0 emulator ----------------------------------------------------------------------


def _small_docs(folder: Path, n: int = 6) -> Path:
    """n text files of 2-3 pages each (~3,000 characters a page), distinct words per document."""
    folder.mkdir(parents=True)
    for i in range(n):
        paragraphs = []
        for p in range(7 + i % 3):
            words = " ".join(f"item{i}x{p}x{k}" for k in range(40))
            paragraphs.append(f"Report {i} section {p}. Delivered on 2026-0{1 + i % 9}-1{p % 10}. {words}.")
        (folder / f"note-{i}.txt").write_text(f"Note number {i}\n\n" + "\n\n".join(paragraphs), "utf-8")
    return folder


def _run(folder: Path, db: Path, emulator, **options) -> pipeline.RunReport:
    limiter = RateLimiter(RateLimits.for_tier("tier0"), time_scale=SCALE, window_margin_s=0.2)
    client = KimiClient(emulator.base_url, emulator.api_key, limiter=limiter, max_retries=6)
    backend = Backend(client=client, name="emulator", base_url=emulator.base_url)
    settings = Settings(
        KIMI_API_KEY=emulator.api_key,
        KIMI_BASE_URL=emulator.base_url,
        KIMIDOCS_DB=str(db),
        KIMIDOCS_TIER="tier0",
    )
    opts = pipeline.RunOptions(folder=str(folder), db=str(db), concurrency=1, **options)
    return pipeline.run_folder(opts, settings, backend=backend)


def _rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture()
def tier0(make_emulator):
    return make_emulator(tier="tier0", time_scale=SCALE)


def test_tier0_packs_small_documents_and_stores_each_alone(tmp_path: Path, tier0) -> None:
    folder = _small_docs(tmp_path / "in")
    db = tmp_path / "k.duckdb"
    report = _run(folder, db, tier0)  # pack=None: on by default because Tier0's RPM binds
    chat = tier0.requests("/chat/completions")
    assert report.count("ok") == 6
    assert len(chat) < 6 and all(e["status"] == 200 for e in chat)
    assert {e["answer_kind"] for e in chat} == {"packed"}
    assert report.packed_requests_saved == 6 - len(chat)
    assert "requests saved" in report_markdown(report)
    summaries = _rows(
        db, "SELECT doc_id, pages_total, coverage, len(key_points) FROM summaries ORDER BY doc_id"
    )
    assert len(summaries) == 6 and all(
        total >= 2 and cov == 1.0 and kp > 0 for _, total, cov, kp in summaries
    )
    # citations point at each document's own pages, and the evidence quoted is on them
    cited = _rows(
        db,
        """
        WITH c AS (
            SELECT s.doc_id, unnest(kp.pages) AS page, kp.evidence
            FROM summaries s, unnest(s.key_points) AS k(kp)
        )
        SELECT c.doc_id, c.page, c.evidence, p.text FROM c
        LEFT JOIN pages p ON p.doc_id = c.doc_id AND p.page_no = c.page""",
    )
    assert cited and all(text is not None for *_, text in cited)
    assert all(normalize_for_match(ev) in normalize_for_match(text) for _, _, ev, text in cited if ev)
    titles = dict(_rows(db, "SELECT doc_id, title FROM summaries"))
    paths = dict(_rows(db, "SELECT doc_id, path FROM documents"))
    for doc_id, title in titles.items():
        assert title.startswith(f"Note number {Path(paths[doc_id]).stem.split('-')[1]}")
    # the pack is logged once per document it carried, with that document's share of the cost
    calls = _rows(db, "SELECT doc_id, stage, request_key, prompt_tokens, cost_usd FROM calls")
    assert {c[1] for c in calls} == {"pack"} and len({c[0] for c in calls}) == 6
    assert sum(c[3] for c in calls) == sum(e["prompt_tokens"] for e in chat)
    assert _rows(db, "SELECT calls FROM runs")[0][0] == len(chat)


def test_packing_can_be_switched_off(tmp_path: Path, tier0) -> None:
    report = _run(_small_docs(tmp_path / "in", 3), tmp_path / "k.duckdb", tier0, pack=False)
    chat = tier0.requests("/chat/completions")
    assert report.count("ok") == 3 and len(chat) == 3 and report.packed_requests_saved == 0
    assert {e["answer_kind"] for e in chat} == {"summary"}


def test_unusable_pack_answer_sends_its_documents_alone(tmp_path: Path, tier0) -> None:
    tier0.fail_next("invalid_json", match="<document id=")  # the pack's answer is broken JSON
    db = tmp_path / "k.duckdb"
    report = _run(_small_docs(tmp_path / "in"), db, tier0)
    chat = tier0.requests("/chat/completions")
    assert [e["answer_kind"] for e in chat] == ["packed"] + ["summary"] * 6
    assert chat[0]["fault"] == "invalid_json"
    assert report.count("ok") == 6 and report.packed_requests_saved == -1  # one request more than alone
    assert _rows(db, "SELECT count(*) FROM summaries")[0][0] == 6


def test_one_bad_part_is_read_again_alone(tmp_path: Path, tier0) -> None:
    """A pack answer whose part for one document is unusable: the others are stored from it, that one is
    read alone. The answer comes from the call log (resume by request key), edited to break one part."""
    folder, db = _small_docs(tmp_path / "in"), tmp_path / "k.duckdb"
    _run(folder, db, tier0)
    first = tier0.chat_requests()
    con = duckdb.connect(str(db))
    key, response = con.execute("SELECT request_key, any_value(response) FROM calls GROUP BY 1").fetchone()
    answer = json.loads(response)
    answer["documents"]["D3"] = {"title": "no summary field"}
    con.execute("UPDATE calls SET response = ? WHERE request_key = ?", [json.dumps(answer), key])
    con.execute("DELETE FROM summaries")
    con.close()
    report = _run(folder, db, tier0)  # no summaries: documents are read again, the pack call is reused
    again = tier0.requests("/chat/completions")[first:]
    assert [e["answer_kind"] for e in again] == ["summary"]  # only the broken part was paid for again
    assert report.count("ok") == 6 and report.packed_requests_saved == 0  # the pack was paid last run
    note3 = next(o for o in report.outcomes if o.path.endswith("note-2.txt"))
    assert note3.calls == 1 and note3.prompt_tokens == again[0]["prompt_tokens"]
    assert _rows(db, "SELECT count(*) FROM summaries")[0][0] == 6
    assert _rows(db, "SELECT calls FROM runs ORDER BY started_at DESC LIMIT 1")[0][0] == 1


def test_an_unexpected_error_on_one_packed_file_is_recorded_and_the_batch_goes_on(
    tmp_path: Path, tier0, monkeypatch
) -> None:
    """Issue 11.1: a bug on one file (here a RuntimeError out of its extraction) with packing on fails
    that file, stage `pipeline`, as `analyze_file` would; the others are packed and stored, the run
    completes."""
    import extractors

    real = extractors.extract

    def extract(path, **kwargs):
        if str(path).endswith("note-3.txt"):
            raise RuntimeError("injected")
        return real(path, **kwargs)

    monkeypatch.setattr(extractors, "extract", extract)
    folder, db = _small_docs(tmp_path / "in"), tmp_path / "k.duckdb"
    report = _run(folder, db, tier0, pack=True)
    bad = next(o for o in report.outcomes if o.path.endswith("note-3.txt"))
    assert (bad.status, bad.error_type) == ("failed", "RuntimeError") and "injected" in (bad.message or "")
    assert report.count("ok") == 5 and report.status == "completed"
    assert _rows(db, "SELECT stage, error_type FROM failures") == [("pipeline", "RuntimeError")]
    assert _rows(db, "SELECT status, documents_ok, documents_failed FROM runs") == [("completed", 5, 1)]
    assert _rows(db, "SELECT count(*) FROM summaries")[0][0] == 5
    assert {e["answer_kind"] for e in tier0.requests("/chat/completions")} == {"packed"}


@pytest.mark.prefect_server
def test_prefect_flow_packs_like_run_folder(tmp_path: Path, make_emulator, prefect_api, monkeypatch) -> None:
    """The deployments' flow packs too (a Tier0 nightly run would otherwise take a request per document):
    every document ends with its own summary, the packs are logged per document, the last one is flushed."""
    from flows.analyze import analyze_folder

    emulator = make_emulator()
    monkeypatch.setenv("KIMI_API_KEY", emulator.api_key)
    monkeypatch.setenv("KIMI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KIMIDOCS_SHARED_LIMITS", "0")
    n = PackPolicy().max_docs + 4  # a full pack sent by a document's task, the rest by the final flush
    folder, db = _small_docs(tmp_path / "in", n), tmp_path / "k.duckdb"
    result = analyze_folder(folder=str(folder), db=str(db), pack=True, concurrency=2)
    chat = emulator.requests("/chat/completions")
    assert result["ok"] == n and result["failed"] == 0
    assert 1 < len(chat) < n and {e["answer_kind"] for e in chat} == {"packed"}
    assert _rows(db, "SELECT count(*), min(coverage) FROM summaries") == [(n, 1.0)]
    calls = _rows(db, "SELECT doc_id, stage FROM calls")
    assert {c[1] for c in calls} == {"pack"} and len({c[0] for c in calls}) == n
    assert _rows(db, "SELECT calls FROM runs")[0][0] == len(chat)
