"""`kimidocs ask` (issue 12 item 7) against the emulator over sockets, real DuckDB: free questions
answered with citations to real pages, the document read from the prefix cache by the 2nd..Nth
question and by a second ask, map-reduce on a long document with the 8K test model, rows in
`questions`."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from kimidocs.cli import app
from kimidocs.core.results import normalize_for_match
from kimidocs.profiles import check_answer_citations, parse_answer, task_schema
from kimidocs.profiles.errors import ProfileError
from kimidocs.profiles.questions import question_profile

QUESTIONS = ("What is this document about?", "Which dates does it mention?")


def rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, kimi_emulator, tmp_path: Path) -> Path:
    db = tmp_path / "k.duckdb"
    monkeypatch.setenv("KIMI_API_KEY", kimi_emulator.api_key)
    monkeypatch.setenv("KIMI_BASE_URL", kimi_emulator.base_url)
    monkeypatch.setenv("KIMIDOCS_DB", str(db))
    return db


def ask(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["ask", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_question_profile_is_a_declared_profile_with_one_cited_answer() -> None:
    declared = question_profile(list(QUESTIONS))
    assert [t.name for t in declared.tasks] == ["q1", "q2"]
    schema = declared.schema("q1")
    answer = schema["properties"]["answer"]  # type: ignore[index]
    assert set(answer["properties"]) == {"value", "pages", "evidence"}
    assert schema["required"] == ["answer"]
    assert QUESTIONS[0] not in declared.system  # the system message stays the same for every question
    assert declared.system == question_profile(["Another one?"]).system
    assert QUESTIONS[0] in declared.stages["q1"]["task"]
    assert task_schema(declared.spec, declared.task("q1")) == schema
    with pytest.raises(ProfileError):
        question_profile([])
    with pytest.raises(ProfileError):
        question_profile(["  "])


def test_citation_check_drops_pages_and_quotes_not_in_the_document() -> None:
    task = question_profile(["Who pays?"]).task("q1")
    content = json.dumps({"answer": {"value": "Alpha", "pages": [1, 9], "evidence": "Alpha pays"}})
    answer = parse_answer(task, content, partial=False)
    checked, report = check_answer_citations(answer, {1: "Alpha pays the rent."}, {1})
    assert checked.answer.pages == [1] and report.pages_dropped == 1  # type: ignore[attr-defined]
    bad = parse_answer(task, content.replace("Alpha pays", "Beta pays"), partial=False)
    dropped, report = check_answer_citations(bad, {1: "Alpha pays the rent."}, {1})
    assert dropped.answer is None and report.evidence_dropped == 1  # type: ignore[attr-defined]


def test_two_questions_cite_real_pages_and_a_second_ask_reads_the_cache(env: Path, corpus: Path) -> None:
    pdf = corpus / "pdf" / "normal_4pages.pdf"
    first = ask(str(pdf), *QUESTIONS)
    assert [a["question"] for a in first] == list(QUESTIONS)
    pages = dict(rows(env, "SELECT page_no, text FROM pages"))
    assert len(pages) > 1
    for a in first:
        assert a["error"] is None and a["answer"], a
        assert a["pages"] and set(a["pages"]) <= set(pages), a
        quote = normalize_for_match(a["evidence"]).strip(" .\"'…")
        assert any(quote in normalize_for_match(pages[p]) for p in a["pages"]), a
    assert first[1]["cached_tokens"] > 0  # the 2nd question read the document from the cache
    second = ask(str(pdf), "What does the last page say?")
    assert second[0]["error"] is None and second[0]["cached_tokens"] > 0, second
    stored = rows(
        env,
        "SELECT question, answer, pages, evidence, cost_usd, run_id, doc_id, model, created_at, "
        "cached_tokens FROM questions ORDER BY created_at",
    )
    assert [r[0] for r in stored] == [*QUESTIONS, "What does the last page say?"]
    assert all(r[1] and r[2] and r[3] and r[5] and r[6] and r[7] and r[8] for r in stored)
    assert len({r[5] for r in stored}) == 2 and len({r[6] for r in stored}) == 1
    assert stored[2][9] > 0
    calls = rows(env, "SELECT cached_tokens FROM calls ORDER BY started_at")
    assert calls[-1][0] > 0


def test_long_document_is_map_reduced_on_the_8k_model(env: Path, corpus: Path) -> None:
    pdf = corpus / "pdf" / "redp5110_sampled.pdf"
    if not pdf.is_file():
        pytest.skip("corpus not present")
    answers = ask("--model", "kimidocs-test-8k", str(pdf), "What is this report about?")
    assert answers[0]["strategy"] == "map_reduce" and answers[0]["calls"] > 2, answers
    assert answers[0]["error"] is None and answers[0]["pages"], answers
    max_page = rows(env, "SELECT max(page_no) FROM pages")[0][0]
    assert max(answers[0]["pages"]) <= max_page
    assert rows(env, "SELECT count(*), min(model) FROM questions") == [(1, "kimidocs-test-8k")]


def test_table_on_screen_and_one_line_errors(env: Path, corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ask", str(corpus / "pdf" / "normal_4pages.pdf"), QUESTIONS[0]])
    assert result.exit_code == 0, result.output
    assert "question" in result.stdout and QUESTIONS[0] in result.stdout and "cached" in result.stdout
    folder = CliRunner().invoke(app, ["ask", str(tmp_path), "Anything?"])
    assert folder.exit_code != 0 and "not a folder" in str(folder.exception)
    locked = CliRunner().invoke(app, ["ask", str(corpus / "bad" / "libreoffice-writer-password.pdf"), "Who?"])
    assert locked.exit_code == 1 and "error:" in locked.stderr and "encrypted" in locked.stderr
    empty = CliRunner().invoke(app, ["ask", str(corpus / "pdf" / "normal_4pages.pdf"), "  "])
    assert empty.exit_code != 0 and "question 1 is empty" in str(empty.exception)


def test_prefect_flow_answers_questions_over_every_document(
    tmp_path: Path, make_emulator, prefect_api, monkeypatch, corpus: Path
) -> None:
    from flows.analyze import analyze_folder

    emulator = make_emulator()
    monkeypatch.setenv("KIMI_API_KEY", emulator.api_key)
    monkeypatch.setenv("KIMI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KIMIDOCS_SHARED_LIMITS", "0")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("normal_4pages.pdf", "multi_page.pdf"):
        (folder / name).write_bytes((corpus / "pdf" / name).read_bytes())
    db = tmp_path / "k.duckdb"
    result = analyze_folder(folder=str(folder), db=str(db), questions=list(QUESTIONS), concurrency=2)
    assert result["ok"] == 2 and result["failed"] == 0, result
    stored = rows(db, "SELECT doc_id, question_no, question, answer, pages FROM questions ORDER BY 1, 2")
    assert len(stored) == 4 and all(r[3] and r[4] for r in stored)
    assert [r[2] for r in stored[:2]] == list(QUESTIONS)
    assert rows(db, "SELECT profile FROM runs") == [("ask",)]
    assert rows(db, "SELECT count(*) FROM summaries") == [(0,)]


def test_an_answer_whose_quote_is_elsewhere_is_dropped_with_a_reason() -> None:
    from extractors.document import Document, Page
    from kimidocs.core.mapreduce import MapReduceResult
    from kimidocs.run.questions import cited_answer

    task = question_profile(["Who pays?"]).task("q1")
    good = json.dumps({"answer": {"value": "Alpha", "pages": [2, 7], "evidence": "Alpha pays"}})
    doc = Document("a.txt", "d", "text", 1, (Page(1, "Intro."), Page(2, "Alpha pays rent.")), "test")

    def result(content: str) -> MapReduceResult:
        answer = parse_answer(task, content, partial=False)
        return MapReduceResult("d", None, 1.0, 2, 2, answer=answer)

    cited, error = cited_answer(result(good), doc)
    assert error is None and cited == {"value": "Alpha", "pages": [2], "evidence": "Alpha pays"}
    cited, error = cited_answer(result(good.replace("Alpha pays", "Beta pays")), doc)
    assert cited is None and error and "quote" in error
    unread = MapReduceResult("d", None, 0.0, 0, 2, errors=("bad JSON",))
    assert cited_answer(unread, doc) == (None, "bad JSON")
