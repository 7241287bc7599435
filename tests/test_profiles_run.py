"""Declared profiles end to end (issue 12, phase 2): real emulator over HTTP, real DuckDB.

A user profile written in a tmp `./profiles/lease/` (outside the package), the built-in `contract` on a
generated multi-page DOCX, the built-in `report` map-reduced on a corpus PDF with the 8K test model:
every task's answer lands in `task_results` and its typed views, citations point at real pages, tasks
2..N read the document prefix from the cache, and editing one task re-runs that task only.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from kimidocs.cli import app
from kimidocs.core.mapreduce import CallOutcome, run_plan
from kimidocs.core.models import get_model
from kimidocs.core.planning import budget_for, plan_document
from kimidocs.core.results import normalize_for_match
from kimidocs.kimi.client import KimiClient
from kimidocs.profiles import load_folder, merge_answers, parse_answer, planning_profile
from kimidocs.run import pipeline
from kimidocs.run.backend import Backend
from kimidocs.run.settings import Settings
from kimidocs.run.tasks import answers_for

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

LEASE = """
description = "Commercial leases"
instructions = "The documents are commercial leases."

[[tasks]]
name = "terms"
instructions = "Find the parties, the start date, the monthly rent and the deposit."
[tasks.fields]
start_date = {type = "date", cite = true}
rent = {type = "money", cite = true}
parties = {type = "list", cite = true, fields = {name = {type = "string", required = true}, role = "string"}}

[[tasks]]
name = "risks"
instructions = "List risky clauses for the tenant."
[tasks.fields]
overall = {type = "enum", values = ["low", "medium", "high"]}
[tasks.fields.clauses]
type = "list"
cite = true
fields = {clause = {type = "string", required = true}, severity = {type = "enum", values = ["low", "high"]}}
"""

FILLER = (
    "The tenant shall keep the premises in good order and shall permit the landlord to inspect them "
    "on reasonable notice during business hours. "
)


def write_contract_docx(path: Path, pages: int = 4) -> Path:
    """A contract over `pages` pages (explicit page breaks): clauses that run over a page break,
    amounts in EUR and USD, dates, parties."""
    import docx
    from docx.enum.text import WD_BREAK

    d = docx.Document()
    d.add_heading("SERVICES AGREEMENT", 0)
    d.add_paragraph(
        "This Services Agreement is made on 1 March 2024 between Alpha Properties Ltd, the client, "
        "and Bravo Systems GmbH, the service provider."
    )
    for page in range(1, pages + 1):
        d.add_heading(f"Clause {page}", 1)
        d.add_paragraph(
            f"{page}.1 The client pays a monthly fee of {page * 1000:,} EUR within 30 days of invoice. "
            + FILLER * 3
        )
        d.add_paragraph(
            f"{page}.2 The service provider may charge USD {page * 250:,}.00 for each additional site visit, "
            "and this clause continues on the next page: " + FILLER * 2
        )
        if page < pages:
            d.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
            d.add_paragraph("(continued) " + FILLER)
    d.add_paragraph(
        "This agreement is governed by the laws of Germany. Either party may terminate it "
        "with 90 days written notice."
    )
    d.save(str(path))
    return path


class Runner:
    """run_folder in-process against the emulator, in a working directory that holds ./profiles."""

    def __init__(self, folder: Path, db: Path, emulator) -> None:
        self.folder, self.db, self.emulator = folder, db, emulator

    def run(self, profile: str, **options) -> pipeline.RunReport:
        settings = Settings(
            KIMI_API_KEY=self.emulator.api_key, KIMI_BASE_URL=self.emulator.base_url, KIMIDOCS_DB=str(self.db)
        )
        backend = Backend(
            KimiClient(self.emulator.base_url, self.emulator.api_key, max_retries=1),
            "emulator",
            self.emulator.base_url,
        )
        opts = pipeline.RunOptions(folder=str(self.folder), db=str(self.db), profile=profile, **options)
        return pipeline.run_folder(opts, settings, backend=backend)

    def chat(self) -> list[dict]:
        return [e for e in self.emulator.requests("/chat/completions") if e["status"] == 200]

    def per_task(self) -> Counter:
        return Counter(e["task"] for e in self.chat())

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def columns(self, view: str) -> dict[str, str]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            rel = con.execute(f"SELECT * FROM {view} LIMIT 0")
            return {d[0]: str(d[1]) for d in rel.description}


def _citations_on_real_pages(runner: Runner, profile: str) -> int:
    """Every cited item of every task result: its pages exist, its evidence is on one of them."""
    pages = {(d, n): t for d, n, t in runner.rows("SELECT doc_id, page_no, text FROM pages")}
    checked = 0

    def walk(doc_id: str, value) -> None:
        nonlocal checked
        if isinstance(value, dict):
            if "pages" in value and value.get("pages"):
                assert all((doc_id, p) in pages for p in value["pages"]), value
                if value.get("evidence"):
                    needle = normalize_for_match(value["evidence"]).strip(" .\"'…")
                    hay = " ".join(normalize_for_match(pages[(doc_id, p)]) for p in value["pages"])
                    assert needle in hay, (needle, value["pages"])
                checked += 1
            for v in value.values():
                walk(doc_id, v)
        elif isinstance(value, list):
            for v in value:
                walk(doc_id, v)

    for doc_id, result in runner.rows("SELECT doc_id, result FROM task_results WHERE profile = ?", [profile]):
        walk(doc_id, json.loads(result))
    return checked


@pytest.fixture
def lease(tmp_path: Path, kimi_emulator, monkeypatch) -> Runner:
    (tmp_path / "profiles" / "lease").mkdir(parents=True)
    (tmp_path / "profiles" / "lease" / "profile.toml").write_text(LEASE)
    folder = tmp_path / "in"
    folder.mkdir()
    write_contract_docx(folder / "lease.docx", pages=3)
    monkeypatch.chdir(tmp_path)  # ./profiles is on the search path
    monkeypatch.delenv("KIMIDOCS_PROFILES", raising=False)
    # The sequencer asks the scheduler whether task 1 goes alone; a 3-page lease saves less than the
    # default threshold by waiting, so the tests that check cache reads say that any saving pays.
    monkeypatch.setenv("KIMIDOCS_WAIT_MIN_SAVING_USD", "0")
    return Runner(folder, tmp_path / "k.duckdb", kimi_emulator)


def test_user_profile_fills_typed_views_with_cited_pages(lease: Runner) -> None:
    report = lease.run("lease")
    assert [o.status for o in report.outcomes] == ["ok"], report.outcomes
    assert lease.per_task() == {"lease.terms": 1, "lease.risks": 1}
    cols = lease.columns("profile_lease_terms")
    assert cols["start_date"] == "DATE" and cols["rent"].startswith("DECIMAL")
    assert cols["start_date_pages"] == "INTEGER[]" and cols["rent_currency"] == "VARCHAR"
    assert lease.rows("SELECT start_date FROM profile_lease_terms") == [
        (__import__("datetime").date(2024, 3, 1),)
    ]
    parties = lease.rows("SELECT name, pages FROM profile_lease_terms_parties ORDER BY item_no")
    assert len(parties) >= 2 and all(p[1] for p in parties)
    assert {p for _n, pages in parties for p in pages} != {1}  # items cite different pages
    assert lease.columns("profile_lease_risks")["overall"] == "VARCHAR"
    assert _citations_on_real_pages(lease, "lease") >= 4
    # Task 2 read system + document from the cache: more than the system message alone.
    calls = lease.rows("SELECT prompt_tokens, cached_tokens FROM calls ORDER BY started_at")
    doc_tokens = lease.rows("SELECT tokens_est FROM documents")[0][0]
    assert calls[1][1] > calls[0][1] and calls[1][1] >= doc_tokens
    assert lease.rows("SELECT count(*) FROM task_results WHERE profile = 'lease'") == [(2,)]


def test_editing_one_task_reruns_only_that_task(lease: Runner, tmp_path: Path) -> None:
    lease.run("lease")
    assert lease.per_task() == {"lease.terms": 1, "lease.risks": 1}
    again = lease.run("lease")
    assert [o.status for o in again.outcomes] == ["unchanged"]
    assert lease.per_task() == {"lease.terms": 1, "lease.risks": 1}

    toml = tmp_path / "profiles" / "lease" / "profile.toml"
    toml.write_text(toml.read_text().replace("List risky clauses for the tenant.", "List clauses that hurt."))
    edited = lease.run("lease")
    assert [o.status for o in edited.outcomes] == ["ok"]
    assert "unchanged: terms" in (edited.outcomes[0].title or "")
    assert lease.per_task() == {"lease.terms": 1, "lease.risks": 2}
    versions = lease.rows(
        "SELECT task, count(DISTINCT task_version) FROM task_results GROUP BY task ORDER BY 1"
    )
    assert versions == [("risks", 2), ("terms", 1)]
    # The views follow the new profile version: one row per task, the newest risks answer.
    assert lease.rows("SELECT count(*) FROM profile_lease_risks") == [(1,)]


def test_dry_run_prices_every_pending_task(lease: Runner, tmp_path: Path) -> None:
    planned = lease.run("lease", dry_run=True)
    assert [o.status for o in planned.outcomes] == ["planned"] and lease.chat() == []
    both = planned.outcomes[0].cost_usd_est or 0.0
    lease.run("lease")
    toml = tmp_path / "profiles" / "lease" / "profile.toml"
    toml.write_text(toml.read_text().replace("List risky clauses for the tenant.", "List clauses that hurt."))
    one = lease.run("lease", dry_run=True).outcomes[0]
    assert one.status == "planned" and 0 < (one.cost_usd_est or 0.0) < both  # only the edited task is left


def test_failed_task_is_recorded_and_alone_rerun(lease: Runner) -> None:
    # The risks task's call fails on every attempt (max_retries=1: two): that task fails alone.
    lease.emulator.fail_next("500", count=2, match="List risky clauses")
    report = lease.run("lease")
    outcome = report.outcomes[0]
    assert outcome.status == "failed" and "risks" in (outcome.message or "")
    assert "terms" in (outcome.message or "").split("tasks done:")[-1]
    failures = lease.rows("SELECT stage, error_type, message FROM failures")
    assert [s for s, _e, _m in failures] == ["call"] and failures[0][1].endswith("Error")
    assert "task risks" in failures[0][2]
    assert lease.rows("SELECT task FROM task_results") == [("terms",)]
    rerun = lease.run("lease")
    assert [o.status for o in rerun.outcomes] == ["ok"]
    assert lease.per_task()["lease.terms"] == 1  # reused; only risks was asked again


def test_contract_docx_five_tasks_share_the_cached_prefix(tmp_path: Path, kimi_emulator) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_contract_docx(folder / "contract.docx", pages=5)
    runner = Runner(folder, tmp_path / "k.duckdb", kimi_emulator)
    report = runner.run("contract")
    assert [o.status for o in report.outcomes] == ["ok"], report.outcomes
    assert report.outcomes[0].pages == 5
    tasks = ("parties", "term", "payments", "obligations", "risks")
    assert runner.per_task() == {f"contract.{t}": 1 for t in tasks}
    calls = runner.rows("SELECT prompt_tokens, cached_tokens, started_at FROM calls ORDER BY started_at")
    first, rest = calls[0], calls[1:]
    assert len(rest) == 4 and all(r[2] >= first[2] for r in rest)
    doc_tokens = runner.rows("SELECT tokens_est FROM documents")[0][0]
    assert all(r[1] >= doc_tokens for r in rest)  # tasks 2..5 read the whole document from the cache
    amounts = runner.rows("SELECT amounts FROM profile_contract_payments")[0][0]
    assert amounts and all(a["pages"] for a in amounts)
    assert _citations_on_real_pages(runner, "contract") >= 5
    views = {
        r[0]
        for r in runner.rows("SELECT view_name FROM duckdb_views() WHERE view_name LIKE 'profile_contract%'")
    }
    assert {f"profile_contract_{t}" for t in tasks} <= views


@pytest.mark.skipif(not (CORPUS / "pdf" / "redp5110_sampled.pdf").is_file(), reason="corpus not present")
def test_report_map_reduce_on_8k_model(tmp_path: Path, kimi_emulator) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "report.pdf").write_bytes((CORPUS / "pdf" / "redp5110_sampled.pdf").read_bytes())
    runner = Runner(folder, tmp_path / "k.duckdb", kimi_emulator)
    report = runner.run("report", model="kimidocs-test-8k", concurrency=2)
    outcome = report.outcomes[0]
    assert outcome.status == "ok" and outcome.strategy == "map_reduce", outcome
    rows = runner.rows("SELECT task, coverage, pages_failed FROM task_results ORDER BY task")
    assert rows == [("findings", 1.0, 0), ("metrics", 1.0, 0), ("overview", 1.0, 0)]
    chat = runner.chat()
    kinds = Counter((e["task"], e["answer_kind"]) for e in chat)
    maps = {t: n for (t, k), n in kinds.items() if k == "schema"}
    assert len(set(maps.values())) == 1 and min(maps.values()) >= 2  # one map pass per task, same chunks
    assert all(kinds[(t, "reduce")] >= 1 for t in maps)
    # Tasks 2..3 read every chunk from the cache: their map calls hit beyond the system message.
    first_task = chat[0]["task"]
    later_maps = [e for e in chat if e["task"] != first_task and e["answer_kind"] == "schema"]
    assert later_maps and all(e["cached_tokens"] > e["prompt_tokens"] // 2 for e in later_maps)
    assert _citations_on_real_pages(runner, "report") >= 3
    pages = runner.rows("SELECT max(page_no) FROM pages")[0][0]
    metric_pages = {
        p for (ps,) in runner.rows("SELECT pages FROM profile_report_metrics_metrics") for p in ps
    }
    assert metric_pages and max(metric_pages) <= pages and len(metric_pages) > 1  # original page numbers


def test_plan_counts_every_task_and_cache_reads_and_says_when_it_shadows(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "profiles" / "contract").mkdir(parents=True)
    (tmp_path / "profiles" / "contract" / "profile.toml").write_text(LEASE)
    doc = write_contract_docx(tmp_path / "c.docx", pages=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIMIDOCS_PROFILES", raising=False)
    result = CliRunner().invoke(app, ["plan", "--profile", "contract", "--json", str(doc)])
    assert result.exit_code == 0, result.output
    assert "shadows" in result.stderr
    rec = json.loads(result.stdout)
    assert rec["tasks"] == ["terms", "risks"] and rec["calls_est"] == 2
    assert rec["cached_tokens_est"] > 0
    monkeypatch.chdir(tmp_path / "profiles")  # no ./profiles here: the built-in, 5 tasks, no note
    builtin = CliRunner().invoke(app, ["plan", "--profile", "contract", "--json", str(doc)])
    assert "shadows" not in builtin.stderr
    five = json.loads(builtin.stdout)
    assert len(five["tasks"]) == 5 and five["cost_usd_est"] > rec["cost_usd_est"]
    summary = json.loads(CliRunner().invoke(app, ["plan", "--json", str(doc)]).stdout)
    assert summary["tasks"] == [] and summary["calls"] == 1


def test_fallback_merge_when_reduce_stays_unusable(tmp_path: Path) -> None:
    """Map partials of any schema merge without the model when the reduce answer (and its repair) is
    unusable: lists united with their pages, the first scalar kept, pages never renumbered."""
    (tmp_path / "lease").mkdir()
    (tmp_path / "lease" / "profile.toml").write_text(LEASE)
    declared = load_folder(tmp_path / "lease")
    task = declared.task("terms")
    model = get_model("kimidocs-test-8k")
    budget = budget_for(model, planning_profile(declared))
    from kimidocs.core.planning import PageTokens

    page_texts = {
        n: f"Page {n}: Alpha Ltd is the landlord. The rent is {n}00 EUR." * 200 for n in (1, 2, 3, 4)
    }
    plan = plan_document([PageTokens(n, t, len(t) // 3) for n, t in page_texts.items()], budget)
    assert plan.strategy == "map_reduce"

    def call(request) -> CallOutcome:
        if request.stage in ("reduce", "repair") and request.level is not None:
            return CallOutcome("not json at all")
        first = request.first_page
        return CallOutcome(
            json.dumps(
                {
                    "start_date": None if first == 1 else {"value": "2024-03-01", "pages": [first]},
                    "rent": {"value": first * 100, "currency": "EUR", "pages": [first]},
                    "parties": [
                        {
                            "name": "Alpha Ltd",
                            "role": "landlord",
                            "pages": [first],
                            "evidence": "Alpha Ltd is the landlord",
                        }
                    ],
                }
            )
        )

    result = run_plan(
        "d", plan, declared.task_profile("terms"), model, call, answers=answers_for(task), concurrency=1
    )
    answer = result.answer
    assert answer is not None and any("merged without the model" in n for n in result.errors)
    assert len(answer.parties) == 1 and answer.parties[0].pages == [c.first_page for c in plan.chunks]
    assert answer.rent.value == plan.chunks[0].first_page * 100
    assert answer.start_date.value == "2024-03-01" and answer.start_date.pages[0] > 1


def test_merge_answers_unites_lists_and_cited_scalars(tmp_path: Path) -> None:
    (tmp_path / "lease").mkdir()
    (tmp_path / "lease" / "profile.toml").write_text(LEASE)
    task = load_folder(tmp_path / "lease").task("risks")
    a = parse_answer(
        task,
        '{"clauses": [{"clause": "Repairs", "severity": "high", "pages": [2]}], "overall": "high"}',
        partial=True,
    )
    b = parse_answer(
        task,
        '{"clauses": [{"clause": " repairs ", "severity": "HIGH", "pages": [5]}, '
        '{"clause": "Notice", "pages": [6]}], "overall": "low"}',
        partial=True,
    )
    merged = merge_answers(task, [a, b])
    assert [(c.clause, c.pages) for c in merged.clauses] == [("Repairs", [2, 5]), ("Notice", [6])]
    assert merged.overall == "high"


def test_prefect_flow_accepts_a_user_profile(tmp_path: Path, make_emulator, prefect_api, monkeypatch) -> None:
    from flows.analyze import analyze_folder

    emulator = make_emulator()
    (tmp_path / "mine" / "lease").mkdir(parents=True)
    (tmp_path / "mine" / "lease" / "profile.toml").write_text(LEASE)
    monkeypatch.setenv("KIMI_API_KEY", emulator.api_key)
    monkeypatch.setenv("KIMI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KIMIDOCS_SHARED_LIMITS", "0")
    monkeypatch.setenv("KIMIDOCS_PROFILES", str(tmp_path / "mine"))
    folder = tmp_path / "in"
    folder.mkdir()
    write_contract_docx(folder / "a.docx", pages=2)
    db = tmp_path / "k.duckdb"
    result = analyze_folder(folder=str(folder), db=str(db), profile="lease", concurrency=2)
    assert result["ok"] == 1 and result["failed"] == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM profile_lease_terms").fetchone() == (1,)
        assert con.execute("SELECT profile FROM runs").fetchall() == [("lease",)]
