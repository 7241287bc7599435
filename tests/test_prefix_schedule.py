"""Scheduling for the prefix cache (issue 14 items 1-2): the run's first call warms the system prompt,
then the folder fans out; inside a document, calls wait for a shared prefix only when that pays.

The rule is a pure function (`schedule.decide`); the runs go through `pipeline.run_folder` to the
emulator over a socket, whose request log says when each call arrived, how many were in flight and how
many of its prompt tokens the prefix cache served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_pipeline

from kimidocs.core.models import get_model
from kimidocs.core.planning import budget_for
from kimidocs.core.schedule import CACHE_BLOCK_TOKENS, decide, system_tokens, whole_blocks
from kimidocs.run import pipeline
from kimidocs.run.report import report_markdown
from kimidocs.run.settings import ConfigError, Settings, load_settings
from prompts import load_profile

K25 = get_model("kimi-k2.5")
SYSTEM = system_tokens(load_profile("summary").system)  # what every call of a summary run shares


def _write_docs(folder: Path, count: int, paragraphs: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = "\n\n".join(
            f"Section {j} of report {i}: the supplier delivered {10 + i * j} units on 2026-03-{1 + j:02d} "
            f"for EUR {100 * (i + 1) + j}.00, and the customer confirmed receipt in writing."
            for j in range(paragraphs)
        )
        (folder / f"report-{i:02d}.txt").write_text(f"Report {i}\n\n{body}\n", encoding="utf-8")


def _chats(emulator) -> list[dict]:
    return sorted(emulator.requests("/chat/completions"), key=lambda e: e["time"])


# ------------------------------------------------------------------------------------------- the rule


def test_a_warm_system_prompt_alone_is_not_worth_waiting_for() -> None:
    d = decide("map", 8, SYSTEM, SYSTEM, K25)  # the run's warm-up already cached it
    assert not d.first_alone and d.saving_usd == 0.0


def test_a_cold_system_prompt_shared_by_two_calls_starts_together() -> None:
    d = decide("map", 2, SYSTEM, 0, K25)
    assert not d.first_alone and 0 < d.saving_usd < d.threshold_usd


def test_a_cold_system_prompt_shared_by_a_folder_is_warmed_first() -> None:
    d = decide("run", 20, SYSTEM, 0, K25)
    assert d.first_alone and d.saving_usd >= d.threshold_usd
    assert d.shared_tokens == whole_blocks(SYSTEM) == SYSTEM // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS


def test_a_large_document_shared_by_several_tasks_goes_alone_first() -> None:
    d = decide("tasks", 5, SYSTEM + 100_000, SYSTEM, K25)
    expected = (whole_blocks(SYSTEM + 100_000) - whole_blocks(SYSTEM)) * 0.5e-6 * 4  # ~$0.2
    assert d.first_alone and d.saving_usd == pytest.approx(expected)


def test_the_threshold_decides_on_both_sides() -> None:
    d = decide("g", 3, 10_000, 0, K25, threshold_usd=0.01)  # saves 9,984 x $0.5/M x 2 = $0.00998
    assert not d.first_alone
    assert decide("g", 3, 10_000, 0, K25, threshold_usd=0.0099).first_alone
    assert not decide("g", 1, 10_000, 0, K25, threshold_usd=0.0).first_alone  # nobody to wait


def test_the_threshold_is_a_validated_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).wait_min_saving_usd == 0.001
    monkeypatch.setenv("KIMIDOCS_WAIT_MIN_SAVING_USD", "-1")
    with pytest.raises(ConfigError, match="KIMIDOCS_WAIT_MIN_SAVING_USD"):
        load_settings(_env_file=None)


# ------------------------------------------------------------------------------------------- the runs


def test_a_folder_warms_the_system_prompt_with_its_first_call_then_fans_out(
    tmp_path: Path, make_emulator
) -> None:
    emulator = make_emulator(latency_ms=150)
    _write_docs(tmp_path / "in", 20)
    report = run_pipeline(tmp_path / "in", tmp_path / "k.duckdb", emulator, concurrency=8)
    assert report.count("ok") == 20
    chats = _chats(emulator)
    assert len(chats) == 20 and all(e["status"] == 200 for e in chats)
    first, rest = chats[0], chats[1:]
    first_end = first["time"] + first["duration_ms"] / 1000
    assert first["concurrency_at_arrival"] == 0
    assert all(e["time"] >= first_end - 0.005 for e in rest)  # nothing started before it returned
    assert max(e["concurrency_at_arrival"] for e in rest) > 1  # then the folder fanned out
    assert first["cached_tokens"] == 0
    # calls 2..N read every whole block of the system prompt from the cache
    assert all(e["cached_tokens"] >= whole_blocks(SYSTEM) for e in rest)
    system_cached = sum(min(e["cached_tokens"], whole_blocks(SYSTEM)) for e in chats)
    assert system_cached >= (len(chats) - 1) / len(chats) * whole_blocks(SYSTEM) * len(chats)
    assert report.scheduling[0].startswith("run: first call alone (20 calls")
    assert "## Prefix cache scheduling" in report_markdown(report)


def test_map_calls_sharing_only_a_warm_system_prompt_start_together(tmp_path: Path, make_emulator) -> None:
    emulator = make_emulator(latency_ms=200)
    _write_docs(tmp_path / "in", 3)
    (tmp_path / "in" / "zz-long.txt").write_text(
        "\n\n".join(
            f"Chapter {k}. " + " ".join(f"The committee reviewed item {k}-{w} in detail." for w in range(40))
            for k in range(80)
        ),
        encoding="utf-8",
    )
    db = tmp_path / "k.duckdb"
    settings = Settings(
        KIMI_API_KEY=emulator.api_key,
        KIMI_BASE_URL=emulator.base_url,
        KIMIDOCS_DB=str(db),
        KIMIDOCS_WAIT_MIN_SAVING_USD=0.0,  # 4 documents: warm the run (any saving pays)
        _env_file=None,
    )
    options = pipeline.RunOptions(
        folder=str(tmp_path / "in"), db=str(db), model="kimidocs-test-8k", concurrency=4
    )
    report = pipeline.run_folder(options, settings)
    assert report.count("ok") == 4
    chats = _chats(emulator)
    partial = budget_for(get_model("kimidocs-test-8k"), load_profile("summary")).partial_output_tokens
    maps = [e for e in chats if e["answer_kind"] == "summary" and e["max_tokens"] == partial]
    assert len(maps) >= 6
    first_end = chats[0]["time"] + chats[0]["duration_ms"] / 1000
    assert all(e["time"] >= first_end - 0.005 for e in chats[1:])  # the run's warm-up went alone
    assert max(e["concurrency_at_arrival"] for e in maps) > 1  # map calls did not wait for each other
    map_decision = next(d for d in report.scheduling if " map: " in d)
    assert "all start together" in map_decision and "already cached" in map_decision


# ------------------------------------------------------------------------------------------- sizes


def test_page_markup_costs_8_tokens_a_page_and_old_markup_still_parses() -> None:
    from kimidocs.core import markup, tokens

    for number in (1, 42, 1234):
        text = "The rent is due on the first day of each month."
        block = markup.page_block(number, text) + "\n"  # blocks are joined by a newline
        old = f'<page number="{number}">\n{text}\n</page>\n'
        size = tokens.count(block) - tokens.count(text)
        assert size <= 8 + len(str(number)) // 3 and size <= tokens.count(old) - tokens.count(text) - 1
        assert markup.parse_pages(block) == [(number, text)]
    assert markup.parse_pages('<page number="3">\nold\n</page>') == [(3, "old")]


def test_the_system_prompt_fills_whole_cache_blocks_and_no_more() -> None:
    # 517 with its role markers: two whole 256-token blocks are read from the cache, 5 tokens miss
    # (it was 796: three blocks and 28 misses, and 2.3x the tokens for a first call).
    assert 2 * CACHE_BLOCK_TOKENS <= SYSTEM < 2 * CACHE_BLOCK_TOKENS + 32
