"""Request layout for the prefix cache, stable keys, and the page / partial / document conventions."""

from __future__ import annotations

import hashlib
import json

from kimidocs.core import tokens
from kimidocs.core.models import get_model
from kimidocs.core.planning import PageTokens, budget_for, plan_document
from kimidocs.core.requests import (
    PackedDocument,
    Partial,
    canonical_json,
    chunk_request,
    document_content,
    pack_request,
    reduce_request,
    render_pieces,
    task_requests,
)
from kimidocs.core.results import parse_packed
from prompts import load_profile

PROFILE = load_profile("summary")
K25 = get_model("kimi-k2.5")
SMALL = get_model("kimidocs-test-8k")


def _pages(n: int, words: int = 30) -> list[PageTokens]:
    out = []
    for i in range(1, n + 1):
        text = f"Page {i} opens here. " + " ".join(f"w{i}x{j}" for j in range(words)) + "."
        out.append(PageTokens(i, text, tokens.count(text)))
    return out


def _map_requests(n_pages: int = 60, words: int = 120):
    budget = budget_for(SMALL, PROFILE)
    plan = plan_document(_pages(n_pages, words), budget)
    reqs = [
        chunk_request(
            PROFILE, SMALL, c, budget, pages_total=plan.pages_total, parts=len(plan.chunks), single=False
        )
        for c in plan.chunks
    ]
    return plan, budget, reqs


def test_three_messages_system_identical_document_before_task() -> None:
    _plan, budget, maps = _map_requests()
    assert len(maps) >= 3
    partials = [Partial(1, 10, '{"summary":"a"}', 5), Partial(11, 20, '{"summary":"b"}', 5)]
    red = reduce_request(PROFILE, SMALL, partials, budget, pages_total=20, level=1, index=0, final=True)
    single_plan = plan_document(_pages(3), budget_for(K25, PROFILE))
    single = chunk_request(
        PROFILE, K25, single_plan.chunks[0], single_plan.budget, pages_total=3, parts=1, single=True
    )
    for req in [*maps, red, single]:
        roles = [m["role"] for m in req.body["messages"]]
        assert roles == ["system", "user", "user"]
        assert req.body["messages"][0]["content"] == PROFILE.system  # byte-identical for every call
        assert req.body["response_format"] == {"type": "json_object"}
        assert "thinking" not in req.body and "temperature" not in req.body  # policy is the client's job
    first_map = maps[0].body["messages"]
    assert first_map[1]["content"].startswith("<page 1>\n")  # the document comes first ...
    assert (
        "pages 1 to" in first_map[2]["content"] and "part 1 of" in first_map[2]["content"]
    )  # ... the task last
    assert red.body["messages"][1]["content"].startswith(
        '<partial first_page="1" last_page="10">{"summary":"a"}'
    )
    assert (maps[0].stage, red.stage, single.stage) == ("map", "reduce", "single")


def test_max_tokens_final_for_single_and_last_reduce_small_for_partials() -> None:
    _plan, budget, maps = _map_requests()
    assert {r.max_tokens for r in maps} == {budget.partial_output_tokens}
    partials = [Partial(1, 1, "{}", 1), Partial(2, 2, "{}", 1)]
    final = reduce_request(PROFILE, SMALL, partials, budget, pages_total=2, level=2, index=0, final=True)
    middle = reduce_request(PROFILE, SMALL, partials, budget, pages_total=2, level=1, index=0, final=False)
    assert final.max_tokens == budget.max_output_tokens > middle.max_tokens == budget.partial_output_tokens


def test_request_key_is_the_hash_of_the_canonical_body_and_stable() -> None:
    _, _, first = _map_requests()
    _, _, again = _map_requests()
    assert [r.request_key for r in first] == [r.request_key for r in again]
    assert len({r.request_key for r in first}) == len(first)
    body = first[0].body
    assert first[0].request_key == hashlib.sha256(canonical_json(body).encode()).hexdigest()
    json.dumps(body)  # serialisable as is
    changed = plan_document([*_pages(60, 120)[:-1], PageTokens(60, "changed", 1)], budget_for(SMALL, PROFILE))
    last = chunk_request(
        PROFILE,
        SMALL,
        changed.chunks[-1],
        changed.budget,
        pages_total=60,
        parts=len(changed.chunks),
        single=False,
    )
    assert last.request_key != first[-1].request_key


def test_tasks_over_one_document_share_the_prefix_key() -> None:
    plan = plan_document(_pages(5), budget_for(K25, PROFILE))
    reqs = task_requests(
        PROFILE, K25, plan.chunks[0], plan.budget, ["List the dates.", "List the amounts."], pages_total=5
    )
    assert reqs[0].prefix_key == reqs[1].prefix_key
    assert reqs[0].request_key != reqs[1].request_key
    assert reqs[0].body["messages"][:2] == reqs[1].body["messages"][:2]
    assert reqs[1].body["messages"][2]["content"] == "List the amounts."
    _, _, maps = _map_requests()
    assert len({r.prefix_key for r in maps}) == len(maps)  # different chunks: different documents


def test_prompt_estimate_covers_the_real_count() -> None:
    _, _, maps = _map_requests()
    for req in maps:
        real = sum(tokens.count(m["content"]) for m in req.body["messages"])
        assert real <= req.prompt_tokens_est <= real * 1.15 + 50


def test_split_page_pieces_keep_the_page_marker() -> None:
    big = "A sentence about budgets. " * 2_000
    pages = [PageTokens(7, big, tokens.count(big))]
    plan = plan_document(pages, budget_for(SMALL, PROFILE))
    assert len(plan.chunks) >= 2
    for chunk in plan.chunks:
        text = render_pieces(chunk.pieces)
        assert text.startswith("<page 7>\n") and text.endswith("\n</page>")


def test_scanned_page_images_follow_their_page_marker() -> None:
    plan = plan_document([PageTokens(1, "Cover.", 2), PageTokens(2, "", 0)], budget_for(K25, PROFILE))
    content = document_content(plan.chunks[0].pieces, {2: [("image/png", b"\x89PNG fake")]})
    assert isinstance(content, list)
    texts = [p.get("text") for p in content]
    assert texts[0].endswith("<page 2>\n")
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert texts[2] == "\n</page>"


def test_pack_request_and_parser_keyed_by_document() -> None:
    budget = budget_for(K25, PROFILE)
    docs = []
    for doc_id in ("aaa", "bbb"):
        plan = plan_document(_pages(2), budget)
        docs.append(PackedDocument(doc_id, plan.chunks[0].pieces))
    req = pack_request(PROFILE, K25, docs, budget)
    content = req.body["messages"][1]["content"]
    assert content.startswith('<document id="aaa">\n<page 1>')
    assert '</document>\n<document id="bbb">' in content
    assert req.stage == "pack" and "2 separate documents" in req.body["messages"][2]["content"]
    answer = json.dumps({"documents": {"aaa": {"summary": "first"}, "bbb": {"title": "no summary"}}})
    parsed = parse_packed(answer, ["aaa", "bbb", "ccc"])
    assert parsed["aaa"].summary == "first"
    assert "summary" in str(parsed["bbb"]) and "ccc" in str(parsed["ccc"])
