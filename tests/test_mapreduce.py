"""Map-reduce orchestration with a deterministic fake model (pure logic: no network here).

The fake reads the page blocks of a request and answers one key point per page (its first words,
cited with the page number and quoted as evidence); a reduce answer keeps an even sample of the
partials' key points. Knobs make it answer invalid JSON or stop at max_tokens.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import extractors
from kimidocs.core import tokens
from kimidocs.core.mapreduce import CallOutcome, run_plan
from kimidocs.core.models import get_model
from kimidocs.core.planning import PageTokens, budget_for, plan_document
from kimidocs.core.requests import ChatRequest
from prompts import load_profile

PROFILE = load_profile("summary")
SMALL = get_model("kimidocs-test-8k")
K25 = get_model("kimi-k2.5")
PAGE = re.compile(r"<page (\d+)>\n(.*?)\n</page>", re.S)
PARTIAL = re.compile(r'<partial first_page="(\d+)" last_page="(\d+)">(.*?)</partial>', re.S)


def _document(request: ChatRequest) -> str:
    content = request.body["messages"][1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def answer(request: ChatRequest) -> str:
    """What the fake model says to `request` (always valid JSON)."""
    doc = _document(request)
    partials = PARTIAL.findall(doc)
    if partials:
        points = [k for _, _, js in partials for k in json.loads(js)["key_points"]]
        step = max(1, len(points) // 12)
        return json.dumps(
            {"title": "Merged", "summary": f"{len(partials)} parts", "key_points": points[::step][:12]}
        )
    points = []
    for number, text in PAGE.findall(doc):
        words = " ".join(text.split()[:8])
        if words:
            points.append({"point": words, "pages": [int(number)], "evidence": words})
    return json.dumps({"summary": f"{len(points)} pages", "key_points": points[:40]})


class FakeModel:
    """A `call` for run_plan that records every request; `behave` can override an answer."""

    def __init__(self, behave: Callable[[ChatRequest, int], CallOutcome | None] | None = None) -> None:
        self.requests: list[ChatRequest] = []
        self.lock = threading.Lock()
        self.behave = behave

    def __call__(self, request: ChatRequest) -> CallOutcome:
        with self.lock:
            self.requests.append(request)
            n = len(self.requests)
        special = self.behave(request, n) if self.behave else None
        return special or CallOutcome(answer(request), "stop")

    def stages(self) -> list[str]:
        return [r.stage for r in self.requests]


def _pages(n: int, words: int = 150) -> list[PageTokens]:
    out = []
    for i in range(1, n + 1):
        text = f"Section {i} explains topic {i}. " + " ".join(f"detail{i}_{j}" for j in range(words)) + "."
        out.append(PageTokens(i, text, tokens.count(text)))
    return out


def _cited(summary) -> set[int]:
    return {p for k in summary.key_points for p in k.pages}


def test_single_call_for_a_short_document() -> None:
    plan = plan_document(_pages(4), budget_for(K25, PROFILE))
    model = FakeModel()
    result = run_plan("doc", plan, PROFILE, K25, model)
    assert model.stages() == ["single"]
    assert result.summary is not None and _cited(result.summary) == {1, 2, 3, 4}
    assert (result.coverage, result.pages_read, result.calls, result.reduce_levels) == (1.0, 4, 1, 0)
    assert (
        json.loads(result.raw)["key_points"][0]["evidence"]
        == "Section 1 explains topic 1. detail1_0 detail1_1 detail1_2"
    )


def test_long_real_document_maps_then_reduces_in_levels_citing_original_pages(corpus: Path) -> None:
    doc = extractors.extract(corpus / "docx/handbook-872p.docx")
    pages = doc.pages[:120]
    counts = tokens.count_many([p.text for p in pages])
    plan = plan_document(
        [PageTokens(p.number, p.text, n) for p, n in zip(pages, counts, strict=True)],
        budget_for(SMALL, PROFILE),
    )
    model = FakeModel()
    result = run_plan(doc.sha256, plan, PROFILE, SMALL, model, concurrency=3)
    stages = model.stages()
    assert stages.count("map") == len(plan.chunks) >= 10
    assert stages.count("reduce") >= 2 and result.reduce_levels >= 2
    assert result.calls == len(model.requests) and result.coverage == 1.0 and not result.failed_chunks
    cited = _cited(result.summary)
    assert len(cited) >= 6 and cited <= {p.number for p in pages}  # original page numbers, spread out
    assert max(cited) > 60 and min(cited) < 30
    levels = [r.level for r in model.requests if r.stage == "reduce"]
    assert levels == sorted(levels)  # level by level
    final = [r for r in model.requests if r.stage == "reduce"][-1]
    assert final.max_tokens == plan.budget.max_output_tokens


def test_first_call_goes_alone_then_the_rest_fan_out() -> None:
    plan = plan_document(_pages(40), budget_for(SMALL, PROFILE))
    assert len(plan.chunks) >= 4
    state = {"in_flight": 0, "max_during_first": 0, "max": 0}
    lock = threading.Lock()
    second_started = threading.Event()
    overlapped = threading.Event()

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        with lock:
            state["in_flight"] += 1
            state["max"] = max(state["max"], state["in_flight"])
            if n == 1:
                state["max_during_first"] = state["in_flight"]
        if request.stage == "map" and n == 2:
            second_started.set()
            overlapped.wait(timeout=10)  # released only when another call runs at the same time
        elif request.stage == "map" and n > 2 and second_started.is_set():
            overlapped.set()
        with lock:
            if n == 1:
                state["max_during_first"] = max(state["max_during_first"], state["in_flight"])
            state["in_flight"] -= 1
        return None

    model = FakeModel(behave)
    run_plan("doc", plan, PROFILE, SMALL, model, concurrency=4)
    assert model.requests[0].chunk_index == 0
    assert state["max_during_first"] == 1  # nothing else ran while the first call warmed the cache
    assert overlapped.is_set() and state["max"] >= 2  # the rest ran side by side


def test_invalid_output_gets_one_repair_call() -> None:
    plan = plan_document(_pages(30), budget_for(SMALL, PROFILE))
    bad_chunk = plan.chunks[1].index

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        if request.stage == "map" and request.chunk_index == bad_chunk:
            return CallOutcome("Sorry, here it is: {broken", "stop")
        return None

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, SMALL, model)
    repairs = [r for r in model.requests if r.stage == "repair"]
    assert len(repairs) == 1 and repairs[0].chunk_index == bad_chunk
    assert "JSON decode error" in repairs[0].body["messages"][-1]["content"]
    assert result.coverage == 1.0 and _cited(result.summary)


def test_a_chunk_that_stays_invalid_is_recorded_and_lowers_coverage() -> None:
    plan = plan_document(_pages(30), budget_for(SMALL, PROFILE))
    bad = plan.chunks[1]

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        if request.chunk_index == bad.index and request.stage in ("map", "repair"):
            return CallOutcome('{"title": "no summary"}', "stop")
        return None

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, SMALL, model)
    (failed,) = result.failed_chunks
    assert (failed.first_page, failed.last_page, failed.pages) == (bad.first_page, bad.last_page, bad.pages)
    assert "invalid output after one repair" in failed.reason and "summary" in failed.reason
    assert result.pages_read == 30 - len(bad.pages) and result.coverage == pytest.approx(
        result.pages_read / 30
    )
    assert result.summary is not None and not (_cited(result.summary) & set(bad.pages))
    assert any("invalid output" in e for e in result.errors)


def test_length_finish_splits_the_chunk_instead_of_resending_it() -> None:
    plan = plan_document(_pages(30), budget_for(SMALL, PROFILE))
    first = plan.chunks[0]

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        if (
            request.stage == "map"
            and request.first_page == first.first_page
            and request.last_page == first.last_page
        ):
            return CallOutcome('{"summary": "cut', "length")
        return None

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, SMALL, model)
    keys = [r.request_key for r in model.requests]
    assert len(keys) == len(set(keys))  # the same call is never sent twice
    halves = [r for r in model.requests if r.stage == "map" and r.chunk_index == first.index][1:]
    assert len(halves) >= 2 and all(r.prompt_tokens_est < model.requests[0].prompt_tokens_est for r in halves)
    assert result.coverage == 1.0 and not result.failed_chunks
    assert {p for r in halves for p in range(r.first_page, r.last_page + 1)} == set(first.pages)
    assert any("read in" in e for e in result.errors)


def test_single_call_cut_at_max_tokens_becomes_map_reduce() -> None:
    plan = plan_document(_pages(6), budget_for(K25, PROFILE))

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        return CallOutcome('{"summary": "', "length") if request.stage == "single" else None

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, K25, model)
    assert model.stages()[0] == "single" and "map" in model.stages() and model.stages()[-1] == "reduce"
    assert result.summary is not None and result.coverage == 1.0


def test_failed_reduce_falls_back_to_a_merge_that_keeps_citations() -> None:
    plan = plan_document(_pages(30), budget_for(SMALL, PROFILE))

    def behave(request: ChatRequest, n: int) -> CallOutcome | None:
        return CallOutcome("not json", "stop") if request.stage in ("reduce", "repair") else None

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, SMALL, model)
    assert result.summary is not None and len(_cited(result.summary)) >= 10
    assert any("merged without the model" in e for e in result.errors)


def test_errors_from_the_call_propagate() -> None:
    plan = plan_document(_pages(30), budget_for(SMALL, PROFILE))

    class Boom(Exception):
        pass

    def call(request: ChatRequest) -> CallOutcome:
        raise Boom("budget exceeded")

    with pytest.raises(Boom):
        run_plan("doc", plan, PROFILE, SMALL, call)


def test_scanned_page_images_reach_the_request(corpus: Path) -> None:
    from kimidocs.core.planning import page_tokens_of

    doc = extractors.extract(corpus / "pdf/testOCR.pdf", keep_images=True)
    plan = plan_document(page_tokens_of(doc, K25), budget_for(K25, PROFILE))
    model = FakeModel(lambda r, n: CallOutcome('{"summary": "a scanned page"}'))
    result = run_plan(doc.sha256, plan, PROFILE, K25, model, document=doc)
    content = model.requests[0].body["messages"][1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "<page 1>\n"
    assert result.summary.summary == "a scanned page" and result.coverage == 1.0


def test_one_unreadable_item_is_dropped_without_a_repair_call() -> None:
    """Issue 17.1.2: a realistic small-model answer (prose, a fence, a trailing comma, one item without its
    point, a page as text) is read in one call; the bad item is noted, the document is not failed."""
    plan = plan_document(_pages(2), budget_for(K25, PROFILE))

    def behave(request: ChatRequest, n: int) -> CallOutcome:
        points = '[{"point": "Topic one", "pages": "1"}, {"pages": [2]},]'
        return CallOutcome(
            f'Sure!\n```json\n{{"summary": "Two topics.", "key_points": {points}}}\n```', "stop"
        )

    model = FakeModel(behave)
    result = run_plan("doc", plan, PROFILE, K25, model)
    assert model.stages() == ["single"]
    assert result.summary is not None and [k.pages for k in result.summary.key_points] == [[1]]
    assert any(
        "1 unreadable items dropped (key_points[1]: point: Field required)" in n for n in result.errors
    )
    assert result.summary.dropped == ("key_points[1]: point: Field required",)  # for the document message
