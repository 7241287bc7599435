"""task_results and the typed views of declared profiles: the contract profile written through the
store and read back with DuckDB's types; column types that never drift, whatever the model writes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimidocs.profiles import answer_model, load_folder, parse_profile, profile_views, views_of
from kimidocs.profiles.prompt import task_version
from kimidocs.store import Store, TaskResultRow
from prompts import PROFILES_DIR

CONTRACT = load_folder(PROFILES_DIR / "contract")
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

ANSWERS = {
    "parties": {
        "contract_title": {"value": "Master Services Agreement", "pages": [1], "evidence": "MASTER SERVICES"},
        "signed_date": {"value": "5 January 2024", "pages": [1]},
        "parties": [
            {"name": "Acme GmbH", "role": "Supplier", "role_as_written": "the Supplier", "pages": [1]},
            {"name": "Beta Ltd", "role": "customer", "pages": [1]},
        ],
    },
    "term": {
        "effective_date": {"value": "2024-02-01", "pages": [1]},
        "end_date": {"value": "January 2027", "pages": [2]},
        "term": {"value": "three years", "pages": [2]},
        "auto_renews": {"value": "yes", "pages": [2]},
        "notice_period_days": {"value": "90 days", "pages": [2]},
        "governing_law": {"value": "Germany", "pages": [3]},
        "termination_rights": [
            {"party": "Customer", "trigger": "convenience", "notice_days": 30, "pages": [3]}
        ],
    },
    "payments": {
        "payment_terms": {"value": "net 30 days", "pages": [2]},
        "total_value": {"value": "EUR 36,000", "pages": [2]},
        "amounts": [
            {"amount": {"value": 12000, "currency": "EUR"}, "what": "annual fee", "frequency": "yearly"},
            {"amount": {"value": "5-10 million"}, "what": "a range", "due": "Q3 2024"},
        ],
        "liability_cap": None,
    },
    "obligations": {
        "obligations": [{"party": "Acme GmbH", "obligation": "deliver", "deadline": "2024-03-01"}]
    },
    "risks": {
        "risky_clauses": [{"clause": "12.3", "risk": "unlimited", "severity": "High"}],
        "overall_risk": "medium",
    },
}


def row(
    task: str, answer: dict, *, doc: str = "d1", version: str | None = None, at: datetime = T0
) -> TaskResultRow:
    spec = CONTRACT.task(task)
    return TaskResultRow(
        doc_id=doc,
        profile="contract",
        profile_version=CONTRACT.version,
        task_version=version or CONTRACT.task_versions[task],
        model="kimi-k2.5",
        run_id="r1",
        backend="emulator",
        spec=spec,
        answer=answer_model(spec).model_validate(answer),
        coverage=1.0,
        pages_total=3,
        pages_read=3,
        created_at=at,
    )


def described(store: Store, name: str) -> dict[str, str]:
    return {r[0]: r[1].replace('"', "") for r in store.query(f'DESCRIBE "{name}"').rows}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "k.duckdb")
    s.migrate()
    yield s
    s.close()


def test_contract_results_read_back_with_typed_columns(store: Store) -> None:
    views = views_of(CONTRACT)
    assert store.refresh_profile_views(views)
    warnings = {task: store.save_task_result(row(task, answer)) for task, answer in ANSWERS.items()}
    # every view's columns have exactly the types the generator promised
    for view in views.views:
        assert described(store, view.name) == {c: t.replace('"', "") for c, t in view.columns}, view.name
    term = store.query("SELECT * FROM profile_contract_term").rows
    cols = dict(zip(store.query("SELECT * FROM profile_contract_term").columns, term[0], strict=True))
    assert cols["effective_date"] == date(2024, 2, 1) and cols["effective_date_precision"] == "day"
    assert (cols["end_date"], cols["end_date_precision"], cols["end_date_text"]) == (
        date(2027, 1, 1),
        "month",
        "January 2027",
    )
    assert cols["auto_renews"] is True and cols["notice_period_days"] == 90
    assert cols["governing_law"] == "Germany" and cols["governing_law_pages"] == [3]
    assert cols["termination_rights"][0]["notice_days"] == 30
    pay = store.query(
        "SELECT total_value, total_value_currency, liability_cap FROM profile_contract_payments"
    )
    assert pay.rows == ((Decimal("36000.0000"), "EUR", None),)
    assert pay.types[0] == "DECIMAL(38,4)"
    amounts = store.query(
        "SELECT item_no, amount, amount_currency, amount_text, due, due_text, frequency "
        "FROM profile_contract_payments_amounts ORDER BY item_no"
    ).rows
    assert amounts == (
        (1, Decimal("12000.0000"), "EUR", "12000", None, None, "yearly"),
        (2, None, None, "5-10 million", None, "Q3 2024", None),
    )
    assert warnings["payments"] == (
        "amounts[1].amount: cannot read '5-10 million' as an amount",
        "amounts[1].due: cannot read 'Q3 2024' as a date",
    )
    parties = store.query(
        "SELECT name, role, pages FROM profile_contract_parties_parties ORDER BY item_no"
    ).rows
    assert parties == (("Acme GmbH", "supplier", [1]), ("Beta Ltd", "customer", [1]))
    stored = store.query(
        "SELECT coercion_warnings, typeof(result), raw->>'$.overall_risk' FROM task_results "
        "WHERE task = 'risks'"
    ).rows
    assert stored == (([], "JSON", "medium"),)


def test_rewrites_replace_and_old_versions_stay_queryable(store: Store) -> None:
    store.refresh_profile_views(views_of(CONTRACT))
    store.save_task_result(row("risks", ANSWERS["risks"]))
    store.save_task_result(row("risks", ANSWERS["risks"] | {"overall_risk": "low"}))
    assert store.query("SELECT count(*) FROM task_results").rows == ((1,),)  # natural key: replaced
    assert store.has_task_result("d1", "contract", "risks", CONTRACT.task_versions["risks"], "kimi-k2.5")
    assert not store.has_task_result("d1", "contract", "term", CONTRACT.task_versions["term"], "kimi-k2.5")

    # an edited risks task: a new version, the old row stays; the view shows the current version
    edited = parse_profile(
        (PROFILES_DIR / "contract" / "profile.toml").read_text().replace("with why each matters", "and why"),
        name="contract",
        file="x",
    )
    versions = {t.name: task_version(edited, t) for t in edited.tasks}
    assert versions["risks"] != CONTRACT.task_versions["risks"]
    assert versions["term"] == CONTRACT.task_versions["term"]
    new_views = profile_views(edited, "v2", versions)
    assert store.refresh_profile_views(new_views) and not store.refresh_profile_views(new_views)
    assert store.query("SELECT count(*) FROM profile_contract_risks").rows == ((0,),)
    store.save_task_result(row("risks", ANSWERS["risks"], version=versions["risks"], at=datetime.now(UTC)))
    assert store.query("SELECT overall_risk, task_version FROM profile_contract_risks").rows == (
        ("medium", versions["risks"]),
    )
    assert store.query("SELECT count(DISTINCT task_version) FROM task_results").rows == ((2,),)
    assert store.query("SELECT profile_version FROM profile_views WHERE profile = 'contract'").rows == (
        ("v2",),
    )


def test_a_removed_task_leaves_no_stale_view(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    two = '[[tasks]]\nname="a"\ninstructions="i"\nfields={x="string"}\n'
    (folder / "profile.toml").write_text(two + two.replace('"a"', '"b"'))
    store.refresh_profile_views(views_of(load_folder(folder)))
    (folder / "profile.toml").write_text(two)
    assert store.refresh_profile_views(views_of(load_folder(folder)))
    names = {n for n, kind in store.relations() if kind == "view"}
    assert "profile_p_a" in names and "profile_p_b" not in names


# ------------------------------------------------------------------------------------- never drifting

EVERY_TYPE = parse_profile(
    """
[[tasks]]
name = "t"
instructions = "i"
[tasks.fields]
s = "string"
n = "integer"
x = "number"
b = "boolean"
d = {type = "date", cite = true}
m = {type = "money", cite = true}
e = {type = "enum", values = ["a", "b"]}
tags = {type = "list", items = "date"}
items = {type = "list", cite = true, fields = {v = "money", w = "integer", when = "date", k = {type = "list", items = "number"}}}
""",  # noqa: E501
    name="every",
    file="every/profile.toml",
)
TASK = EVERY_TYPE.tasks[0]
VIEWS = profile_views(EVERY_TYPE, "v1", {"t": "tv1"})

_text = st.text(st.characters(codec="utf-8"), max_size=20)
_scalar = st.one_of(
    st.none(),
    _text,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1,200", "12 months", "yes", "2020-01", "€3,5", "Q3 2021", "5-10 million", "0"]),
)
_pages = st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=3)
_money = st.fixed_dictionaries(
    {"value": st.one_of(_text, st.integers(-(10**40), 10**40), st.floats())},
    optional={"currency": st.one_of(st.none(), _text)},
)
_answer = st.fixed_dictionaries(
    {},
    optional={
        "s": _scalar,
        "n": _scalar,
        "x": _scalar,
        "b": st.one_of(st.booleans(), _scalar),
        "d": st.one_of(st.none(), _text, st.fixed_dictionaries({"value": _text, "pages": _pages})),
        "m": st.one_of(
            st.none(), st.fixed_dictionaries({"value": _text, "currency": _text, "pages": _pages})
        ),
        "e": st.sampled_from([None, "a", "B", " a "]),
        "tags": st.lists(_text, max_size=3),
        "items": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "v": st.one_of(st.none(), _money),
                    "w": _scalar,
                    "when": st.one_of(st.none(), _text),
                    "k": st.lists(st.one_of(_text, st.integers(-(10**30), 10**30)), max_size=2),
                    "pages": _pages,
                    "evidence": st.one_of(st.none(), _text),
                },
            ),
            max_size=3,
        ),
    },
)


@pytest.fixture(scope="module")
def typed_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("task_types") / "k.duckdb")
    s.migrate()
    s.refresh_profile_views(VIEWS)
    yield s
    s.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_answer)
def test_messy_answers_never_change_view_column_types(typed_store: Store, answer: dict) -> None:
    validated = answer_model(TASK).model_validate(answer)  # what the pipeline would have accepted
    warnings = typed_store.save_task_result(
        TaskResultRow("d1", "every", "v1", "tv1", "m", "r", "emulator", TASK, validated, 1.0, 1, 1, T0)
    )
    for view in VIEWS.views:
        assert described(typed_store, view.name) == {c: t.replace('"', "") for c, t in view.columns}
    got = typed_store.query(
        "SELECT len(tags), len(items), typeof(d), typeof(m), typeof(n), typeof(items) FROM profile_every_t"
    ).rows
    assert len(got) == 1  # replaced on its natural key, never duplicated
    n_tags, n_items, t_d, t_m, t_n, t_items = got[0]
    assert (n_tags, n_items) == (len(validated.tags), len(validated.items))
    assert (t_d, t_m, t_n) == ("DATE", "DECIMAL(38,4)", "BIGINT")
    assert t_items.startswith("STRUCT(v STRUCT(")
    flat = typed_store.query("SELECT count(*) FROM profile_every_t_items").rows[0][0]
    assert flat == len(validated.items)
    count = typed_store.query("SELECT len(coercion_warnings) FROM task_results").rows[0][0]
    assert count == len(warnings)
