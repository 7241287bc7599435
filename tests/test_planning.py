"""Planning on real corpus documents and on generated ones, with windows from the model table."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import CORPUS, extracted

import extractors
from kimidocs.core import tokens
from kimidocs.core.models import get_model
from kimidocs.core.planning import (
    MAP_REDUCE,
    PAGE_OVERHEAD_TOKENS,
    SINGLE_CALL,
    PageTokens,
    PlanningError,
    budget_for,
    iter_chunks,
    iter_pieces,
    plan_document,
)
from prompts import load_profile

PROFILE = load_profile("summary")


def _page_tokens(path: Path) -> list[PageTokens]:
    doc = extracted(str(path.relative_to(CORPUS)))  # shared with the manifest test: long PDFs once
    counts = tokens.count_many([p.text for p in doc.pages])
    return [PageTokens(p.number, p.text, n) for p, n in zip(doc.pages, counts, strict=True)]


@pytest.fixture(scope="module")
def handbook(corpus: Path) -> list[PageTokens]:
    return _page_tokens(corpus / "docx/handbook-872p.docx")


def _check_page_aligned(plan, pages: list[PageTokens]) -> None:
    """Chunks follow each other page by page; a page spans two chunks only when it was split."""
    pieces = [p for c in plan.chunks for p in c.pieces]
    assert [p.page for p in pieces] == sorted(p.page for p in pieces)
    assert {p.page for p in pieces} == {p.number for p in pages}
    for a, b in zip(plan.chunks, plan.chunks[1:], strict=False):
        assert a.last_page <= b.first_page
        if a.last_page == b.first_page:
            assert a.pieces[-1].part and b.pieces[0].part  # the shared page was cut into parts
    assert all(c.tokens_est <= plan.budget.chunk_tokens for c in plan.chunks)


def test_budget_comes_from_the_model_table_and_leaves_the_margin() -> None:
    for model_id in ("kimi-k2.5", "kimi-k3", "kimidocs-test-8k"):
        model = get_model(model_id)
        b = budget_for(model, PROFILE)
        assert b.window == model.window
        assert b.max_output_tokens == min(PROFILE.max_output_tokens, model.max_output)
        assert b.chunk_tokens == b.window - b.fixed_prompt_tokens - b.max_output_tokens - b.margin
        # a full chunk, underestimated by the whole safety margin, plus max_tokens still fits the window
        assert (b.fixed_prompt_tokens + b.chunk_tokens) * (
            1 + tokens.SAFETY_MARGIN
        ) + b.max_output_tokens <= b.window
        assert 2 * b.partial_tokens_max <= b.chunk_tokens  # a reduce call always holds two partials
        assert b.fixed_prompt_tokens > tokens.count(PROFILE.system)


def test_window_too_small_is_a_clear_error() -> None:
    with pytest.raises(PlanningError, match="window 3,000 leaves"):
        budget_for(get_model("kimidocs-test-8k"), PROFILE, window=3_000)


def test_short_document_is_one_call_on_kimi_k25(corpus: Path) -> None:
    pages = _page_tokens(corpus / "pdf/multi_page.pdf")
    plan = plan_document(pages, budget_for(get_model("kimi-k2.5"), PROFILE))
    assert plan.strategy == SINGLE_CALL
    assert (len(plan.chunks), plan.calls, plan.reduce_levels, plan.coverage) == (1, 1, 0, 1.0)
    assert plan.chunks[0].pages == (1, 2, 3, 4, 5)
    assert plan.tokens_est == sum(p.tokens for p in pages)


def test_handbook_on_8k_window_is_many_chunks_and_several_reduce_levels(handbook: list[PageTokens]) -> None:
    plan = plan_document(handbook, budget_for(get_model("kimidocs-test-8k"), PROFILE))
    assert plan.strategy == MAP_REDUCE
    assert len(plan.chunks) >= 30
    assert plan.reduce_levels >= 2
    assert plan.calls == len(plan.chunks) + sum(plan.reduce_groups)
    assert plan.coverage == 1.0
    _check_page_aligned(plan, handbook)


def test_handbook_fits_one_call_on_kimi_k25(handbook: list[PageTokens]) -> None:
    plan = plan_document(handbook, budget_for(get_model("kimi-k2.5"), PROFILE))
    assert plan.strategy == SINGLE_CALL and plan.calls == 1
    assert plan.chunks[0].tokens_est == plan.tokens_est + PAGE_OVERHEAD_TOKENS * len(handbook)


@pytest.mark.slow
def test_art_of_public_speaking_near_the_256k_window(corpus: Path) -> None:
    """~1M characters: whether it is one call or two depends on its token count against the budget."""
    pages = _page_tokens(corpus / "pdf/The-Art-of-Public-Speaking.pdf")
    budget = budget_for(get_model("kimi-k2.5"), PROFILE)
    plan = plan_document(pages, budget)
    rendered = plan.tokens_est + PAGE_OVERHEAD_TOKENS * len(pages)
    assert plan.tokens_est > 200_000
    if rendered <= budget.chunk_tokens:
        assert plan.strategy == SINGLE_CALL
    else:  # over the budget by less than a window: two chunks and one reduce
        assert plan.strategy == MAP_REDUCE
        assert (len(plan.chunks), plan.reduce_levels, plan.calls) == (2, 1, 3)
    _check_page_aligned(plan, pages)


def test_three_million_tokens_still_map_reduce_on_a_1m_window() -> None:
    text = (
        "The parties agree that the supplier delivers the goods described in annex A by 1 March 2025. "
        "Payment of EUR 12,500.00 is due within 30 days of the invoice.\n\n"
    ) * 40
    per_page = tokens.count(text)
    n = 3_000_000 // per_page + 1
    pages = [PageTokens(i, text, per_page) for i in range(1, n + 1)]
    budget = budget_for(get_model("kimi-k3"), PROFILE)
    plan = plan_document(pages, budget)
    assert sum(p.tokens for p in pages) >= 3_000_000
    assert plan.strategy == MAP_REDUCE
    assert len(plan.chunks) == 4  # 3M + markup over ~948k per chunk
    assert plan.reduce_levels == 1 and plan.calls == 5
    assert all(c.tokens_est <= budget.chunk_tokens for c in plan.chunks)
    _check_page_aligned(plan, pages)


def test_unreadable_pages_are_listed_not_lost() -> None:
    pages = [
        PageTokens(1, "Intro.", 2),
        PageTokens(2, "", 0, unreadable="no text layer"),
        PageTokens(3, "", 0),  # empty but readable: a blank page is still covered
        PageTokens(4, "End.", 2),
    ]
    plan = plan_document(pages, budget_for(get_model("kimi-k2.5"), PROFILE))
    assert plan.coverage == 0.75
    assert [(s.page, s.reason) for s in plan.skipped_pages] == [(2, "no text layer")]
    assert plan.chunks[0].pages == (1, 3, 4)
    with pytest.raises(PlanningError, match="nothing to read"):
        plan_document([PageTokens(1, "", 0, unreadable="no text layer")], plan.budget)


def test_an_oversized_page_is_split_into_numbered_parts_of_the_same_page() -> None:
    paragraph = "Public speaking is a skill. It improves with practice and with feedback.\n\n"
    big = paragraph * 400
    pages = [
        PageTokens(1, "Short first page.", 4),
        PageTokens(2, big, tokens.count(big)),
        PageTokens(3, "Last.", 2),
    ]
    budget = budget_for(get_model("kimidocs-test-8k"), PROFILE)
    plan = plan_document(pages, budget)
    parts = [p for c in plan.chunks for p in c.pieces if p.page == 2]
    assert len(parts) >= 2
    assert [p.part for p in parts] == [(k,) for k in range(1, len(parts) + 1)]
    assert "".join(p.text for p in parts) == big
    assert all(p.text.endswith("\n\n") for p in parts)  # cut at paragraph boundaries
    _check_page_aligned(plan, pages)


def test_chunking_steps_are_lazy_iterators() -> None:
    pages = (PageTokens(i, "word " * 10, 10) for i in range(1, 1_000_000))  # never materialised
    chunks = iter_chunks(iter_pieces(pages, 100), 100)
    assert inspect.isgenerator(chunks)
    first = next(chunks)
    assert first.index == 0 and first.first_page == 1


def test_plan_command_json_contract_and_typed_error(corpus: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kimidocs.cli import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["plan", str(corpus / "pdf/redp5110_sampled.pdf"), "--model", "kimidocs-test-8k", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    rec = json.loads(ok.stdout)
    # Keys are only ever added, after the old ones.
    assert list(rec) == [
        "path", "model", "window", "tokens_est", "strategy", "chunks", "reduce_levels", "calls", "coverage",
        "cost_usd_est", "profile", "tasks", "calls_est", "prompt_tokens_est", "cached_tokens_est", "mode",
    ]  # fmt: skip
    assert (rec["model"], rec["window"], rec["strategy"]) == ("kimidocs-test-8k", 8_192, "map_reduce")
    assert [c["index"] for c in rec["chunks"]] == list(range(len(rec["chunks"])))
    assert rec["chunks"][0]["first_page"] == 1 and rec["chunks"][-1]["last_page"] == 18
    assert rec["calls"] > len(rec["chunks"]) and rec["coverage"] == 1.0 and rec["cost_usd_est"] > 0
    bad = runner.invoke(app, ["plan", str(corpus / "bad/libreoffice-writer-password.pdf")])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: EncryptedDocument: ") and bad.stderr.count("\n") == 1


def test_plan_mode_batch_is_the_estimate_at_the_batch_price_without_cache_hits(corpus: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kimidocs.cli import app

    runner = CliRunner()
    doc = str(corpus / "pdf/redp5110_sampled.pdf")
    args = ["plan", doc, "--model", "kimidocs-test-8k", "--json"]
    inter = json.loads(runner.invoke(app, args).stdout)
    result = runner.invoke(app, [*args, "--mode", "batch"])
    assert result.exit_code == 0, result.output
    batch = json.loads(result.stdout)
    model = get_model("kimidocs-test-8k")
    assert (inter["mode"], batch["mode"]) == ("interactive", "batch")
    assert batch["cached_tokens_est"] == 0 and batch["calls"] == inter["calls"]
    assert batch["prompt_tokens_est"] == inter["prompt_tokens_est"]
    # The same tokens with the expected cache hits billed at the miss price, times the batch factor.
    hits_as_misses = inter["cached_tokens_est"] * (model.price_cache_miss - model.price_cache_hit) / 1e6
    list_price = inter["cost_usd_est"] + hits_as_misses
    assert batch["cost_usd_est"] == pytest.approx(0.6 * list_price, rel=1e-4)
    assert batch["cost_usd_est"] < inter["cost_usd_est"]
    table = runner.invoke(app, ["plan", doc, "--model", "kimidocs-test-8k", "--mode", "batch"])
    assert table.exit_code == 0 and "at the batch price" in table.stdout
    refused = runner.invoke(app, ["plan", doc, "--model", "kimi-k3", "--mode", "batch"])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: NoBatchSupport: ") and refused.stderr.count("\n") == 1
    assert runner.invoke(app, ["plan", doc, "--mode", "cheap"]).exit_code == 1


def test_scanned_pages_are_images_for_multimodal_models_and_skipped_otherwise(corpus: Path) -> None:
    from kimidocs.core.planning import IMAGE_TOKENS_EST, page_tokens_of

    doc = extractors.extract(corpus / "pdf/testOCR.pdf", keep_images=True)
    k25 = get_model("kimi-k2.5")
    plan = plan_document(page_tokens_of(doc, k25), budget_for(k25, PROFILE))
    assert plan.coverage == 1.0 and plan.chunks[0].tokens_est >= IMAGE_TOKENS_EST
    text_only = get_model("kimi-k2-0905-preview")
    pages = page_tokens_of(doc, text_only)
    assert pages[0].unreadable == "no text layer and kimi-k2-0905-preview reads no images"
    with pytest.raises(PlanningError, match="nothing to read"):
        plan_document(pages, budget_for(text_only, PROFILE))


def test_plan_refuses_what_analyze_refuses(corpus: Path) -> None:
    """Issue 11.1: `kimidocs plan` prepares a file as `analyze` does (limits, quality gate, count, plan):
    jo.pdf read by pypdf (garbled vertical Japanese), refused by the run with LowTextQuality, is not
    priced by `plan` either. (pdfium, the default engine, reads it well enough to pass the gate.)"""
    from typer.testing import CliRunner

    from kimidocs.cli import app

    refused = CliRunner().invoke(
        app, ["plan", str(corpus / "pdf/jo.pdf")], env={"KIMIDOCS_PDF_ENGINE": "pypdf"}
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: LowTextQuality: ") and refused.stderr.count("\n") == 1
