"""Column types never drift: messy model output is coerced (DATE, DECIMAL) or kept as text, never retyped."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kimidocs.core.results import Amount, Summary
from kimidocs.store import Store, SummaryRow
from kimidocs.store.coerce import parse_amount, parse_date

T = "2026-03-02T01:00:00+00:00"


@pytest.mark.parametrize(
    ("text", "expected", "precision"),
    [
        ("2020-01-05", date(2020, 1, 5), "day"),
        ("2020-01-05T10:00:00Z", date(2020, 1, 5), "day"),
        ("2020/1/5", date(2020, 1, 5), "day"),
        ("January 5, 2020", date(2020, 1, 5), "day"),
        ("Sept. 3rd, 2021", date(2021, 9, 3), "day"),
        ("5 Jan 2020", date(2020, 1, 5), "day"),
        ("5th of January 2020", date(2020, 1, 5), "day"),
        ("05.01.2020", date(2020, 1, 5), "day"),  # dotted: day.month.year
        ("13/01/2020", date(2020, 1, 13), "day"),
        ("01/13/2020", date(2020, 1, 13), "day"),
        ("2020-01", date(2020, 1, 1), "month"),
        ("March 2021", date(2021, 3, 1), "month"),
        ("2021年3月", date(2021, 3, 1), "month"),
        ("2021年3月7日", date(2021, 3, 7), "day"),
        ("2020", date(2020, 1, 1), "year"),
        ("01/02/2020", None, None),  # 1 Feb or 2 Jan: never guessed
        ("2020-02-30", None, None),
        ("Q3 2021", None, None),
        ("last Tuesday", None, None),
        ("", None, None),
    ],
)
def test_dates(text: str, expected: date | None, precision: str | None) -> None:
    parsed = parse_date(text)
    assert (parsed.value, parsed.precision) == (expected, precision)


@pytest.mark.parametrize(
    ("value", "currency", "expected", "code"),
    [
        ("$1,200.50", None, "1200.5", "USD"),
        ("USD 5 million", None, "5000000", "USD"),
        ("1.2k", "eur", "1200", "EUR"),
        ("€3,5", None, "3.5", "EUR"),
        ("1.234.567,89 €", None, "1234567.89", "EUR"),
        ("1 234 567", "CHF", "1234567", "CHF"),
        ("(1,000)", "$", "-1000", "USD"),
        ("-$5", None, "-5", "USD"),
        ("¥3亿", None, "300000000", "CNY"),
        ("500 euros", None, "500", "EUR"),
        ("12%", None, "12", "%"),
        ("0.00005", None, "0.0000", None),  # DECIMAL(38,4): rounded, half-even
        (1.5, "usd", "1.5", "USD"),
        (250000, None, "250000", None),
        ("5-10 million", "USD", None, "USD"),  # a range is not one value
        ("about a third", None, None, None),
        (float("nan"), None, None, None),
        (1e40, None, None, None),  # does not fit DECIMAL(38,4)
        (10**24, None, "1000000000000000000000000", None),  # 29 digits with 4 places: fits, needs prec 38
        ("-9999999999999999999999999999999999.99995", None, None, None),  # rounds past 34 digits
        (-9999999999999999999999999999999999.99995, None, None, None),  # same as a number
        ("9999999999999999999999999999999999.4999", None, "9999999999999999999999999999999999.4999", None),
    ],
)
def test_amounts(value: str | float, currency: str | None, expected: str | None, code: str | None) -> None:
    parsed = parse_amount(value, currency)
    assert parsed.value == (Decimal(expected) if expected is not None else None)
    assert parsed.currency == code


EXPECTED_TYPES = {
    "key_points": "STRUCT(point VARCHAR, pages INTEGER[], evidence VARCHAR)[]",
    "entities": 'STRUCT("name" VARCHAR, "type" VARCHAR)[]',
    "dates": 'STRUCT(date DATE, "precision" VARCHAR, date_text VARCHAR, what VARCHAR, pages INTEGER[])[]',
    "amounts": (
        'STRUCT("value" DECIMAL(38,4), value_text VARCHAR, currency VARCHAR, what VARCHAR, pages INTEGER[])[]'
    ),
    "coverage": "DOUBLE",
    "raw": "JSON",
}

# Text a model might write: any unicode (NUL included), plus the date and amount styles seen in documents.
_text = st.text(st.characters(codec="utf-8"), max_size=40)
_date_text = st.one_of(
    _text,
    st.dates().map(str),
    st.dates().map(lambda d: d.strftime("%B %d, %Y")),
    st.dates().map(lambda d: d.strftime("%d.%m.%Y")),
    st.dates().map(lambda d: d.strftime("%m/%d/%Y")),
    st.sampled_from(["2020-01", "Q3 2021", "2021年3月", "0000-00-00", "9999-12-31T23:59:59+14:00"]),
)
_amount = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(lambda d: f"${d:,}"),
    st.sampled_from(["€3,5", "1.2k", "USD 5 million", "5-10 million", "(1,000)", "1e400", "１２３"]),
)
_pages = st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4)
_summary = st.builds(
    Summary.model_validate,
    st.fixed_dictionaries(
        {
            "summary": _text,
            "title": _text,
            "language": _text,
            "key_points": st.lists(
                st.fixed_dictionaries(
                    {"point": _text, "pages": _pages, "evidence": st.one_of(st.none(), _text)}
                ),
                max_size=3,
            ),
            "entities": st.lists(st.fixed_dictionaries({"name": _text, "type": _text}), max_size=3),
            "dates": st.lists(
                st.fixed_dictionaries({"date": _date_text, "what": _text, "pages": _pages}), max_size=3
            ),
            "amounts": st.lists(
                st.fixed_dictionaries(
                    {
                        "value": _amount,
                        "currency": st.one_of(st.none(), _text),
                        "what": _text,
                        "pages": _pages,
                    }
                ),
                max_size=3,
            ),
        }
    ),
)


@pytest.fixture(scope="module")
def typed_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("types") / "k.duckdb")
    store.migrate()
    yield store
    store.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(summary=_summary, raw=st.one_of(_text, st.just('{"a": 1}')), coverage=st.floats(0, 1))
@example(  # found by hypothesis in CI: 29 digits at 4 places overflowed Python's 28-digit decimal context
    summary=Summary(summary="", amounts=[Amount(value=10**24)]), raw='{"a": 1}', coverage=0.0
)
def test_messy_outputs_never_change_column_types(
    typed_store: Store, summary: Summary, raw: str, coverage: float
) -> None:
    from datetime import datetime

    row = SummaryRow(
        "d1",
        "summary",
        "v1",
        "kimi-k2.5",
        "r1",
        "emulator",
        summary,
        coverage,
        3,
        3,
        raw,
        datetime.fromisoformat(T),
    )
    warnings = typed_store.save_summary(row)
    described = dict((r[0], r[1]) for r in typed_store.query("DESCRIBE summaries").rows)
    assert {k: described[k] for k in EXPECTED_TYPES} == EXPECTED_TYPES
    got = typed_store.query(
        "SELECT typeof(dates), typeof(amounts), len(dates), len(amounts), len(coercion_warnings), "
        "[d.date_text FOR d IN dates], [a.value FOR a IN amounts] FROM summaries"
    ).rows
    assert len(got) == 1  # replaced on its natural key, never duplicated
    t_dates, t_amounts, n_dates, n_amounts, n_warn, date_texts, values = got[0]
    assert (t_dates, t_amounts) == (EXPECTED_TYPES["dates"], EXPECTED_TYPES["amounts"])
    assert (n_dates, n_amounts) == (len(summary.dates), len(summary.amounts))
    assert n_warn == len(warnings)
    # every unreadable value is NULL and reported, never silently dropped
    unread = sum(v is None for v in values) + sum(parse_date(d.date).value is None for d in summary.dates)
    assert sum(w.startswith(("dates[", "amounts[")) and "cannot read" in w for w in warnings) == unread
    assert [t.replace("\x00", "") for t in date_texts] == [d.date.replace("\x00", "") for d in summary.dates]
