"""The queries behind `kimidocs runs`: recent runs, one run, its failures and costliest documents, and
a run id from its first characters. Kept with the store: raw SQL lives in one package."""

from __future__ import annotations

from kimidocs.store.errors import StoreError
from kimidocs.store.store import Store

RECENT_SQL = """
SELECT left(run_id, 12) AS run, strftime(started_at, '%Y-%m-%d %H:%M') AS started, status,
       documents_ok AS ok, documents_skipped AS skipped, documents_failed AS failed, calls,
       round(cost_usd, 4) AS cost_usd, round(duration_s, 1) AS seconds, model, backend, folder
FROM run_costs ORDER BY started_at DESC LIMIT ?
"""
ONE_SQL = """
SELECT run_id, flow_run_id, started_at, finished_at, round(duration_s, 1) AS seconds, status, folder, profile,
       model, backend, documents_ok AS ok, documents_skipped AS skipped, documents_failed AS failed, calls,
       failed_calls, prompt_tokens, cached_tokens, completion_tokens, round(cost_usd, 6) AS cost_usd
FROM run_costs WHERE run_id = ?
"""
FAILURES_SQL = """
SELECT path, stage, error_type, message FROM failures WHERE run_id = ? ORDER BY failed_at, path
"""
COSTLIEST_SQL = """
SELECT coalesce(any_value(f.path), c.doc_id) AS path, any_value(s.title) AS title, count(*) AS calls,
       sum(c.prompt_tokens) AS prompt_tokens, sum(c.cached_tokens) AS cached_tokens,
       round(sum(c.cost_usd), 6) AS cost_usd
FROM calls AS c
LEFT JOIN files AS f ON f.doc_id = c.doc_id AND NOT f.deleted
LEFT JOIN summaries AS s ON s.doc_id = c.doc_id AND s.run_id = c.run_id
WHERE c.run_id = ?
GROUP BY c.doc_id ORDER BY sum(c.cost_usd) DESC, path LIMIT ?
"""


class RunNotFound(StoreError):
    """No run, or several, start with the id given."""


def resolve_run_id(store: Store, prefix: str) -> str:
    """The full run id for `prefix` (the table shows 12 characters)."""
    rows = store.query("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [prefix]).rows
    if len(rows) != 1:
        found = "no run" if not rows else f"{len(rows)} runs"
        raise RunNotFound(f"{store.path}: {found} with an id starting {prefix!r}; `kimidocs runs` lists them")
    return str(rows[0][0])
