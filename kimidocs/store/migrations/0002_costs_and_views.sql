-- 0002: model prices (refilled from kimidocs.models.MODELS on every migrate, so SQL can price
-- tokens) and the analysts' views: latest results, costs, cache efficiency, recent failures.

CREATE TABLE model_prices (
    model            VARCHAR PRIMARY KEY,
    "window"         INTEGER,
    price_cache_hit  DOUBLE NOT NULL,        -- USD per 1M prompt tokens read from the cache
    price_cache_miss DOUBLE NOT NULL,        -- USD per 1M prompt tokens not in the cache
    price_output     DOUBLE NOT NULL,        -- USD per 1M completion tokens
    test_only        BOOLEAN NOT NULL,       -- exists only in the emulator
    updated_at       TIMESTAMP NOT NULL
);

-- One row per document and profile: the newest stored result (any prompt version or model).
CREATE VIEW latest_summaries AS
SELECT s.*, d.path, d.kind, d.title AS file_title
FROM summaries AS s
LEFT JOIN documents AS d ON d.doc_id = s.doc_id
QUALIFY row_number() OVER (
    PARTITION BY s.doc_id, s.profile ORDER BY s.created_at DESC, s.prompt_version DESC, s.model
) = 1;

-- Every call ever made for a document, summed (all runs, all profiles).
CREATE VIEW document_costs AS
SELECT
    c.doc_id,
    any_value(d.path) AS path,
    any_value(d.pages) AS pages,
    count(*) AS calls,
    count(*) FILTER (WHERE c.status <> 'ok') AS failed_calls,
    count(DISTINCT c.run_id) AS runs,
    sum(c.prompt_tokens) AS prompt_tokens,
    sum(c.cached_tokens) AS cached_tokens,
    sum(c.completion_tokens) AS completion_tokens,
    sum(c.cost_usd) AS cost_usd,
    bool_or(c.backend = 'emulator') AS emulated,
    min(c.started_at) AS first_call_at,
    max(c.started_at) AS last_call_at
FROM calls AS c
LEFT JOIN documents AS d ON d.doc_id = c.doc_id
WHERE c.doc_id IS NOT NULL
GROUP BY c.doc_id;

-- One row per run; token and dollar columns are summed from `calls`, so they are right even for
-- a run that crashed before writing its totals.
CREATE VIEW run_costs AS
WITH per_run AS (
    SELECT
        run_id,
        count(*) AS calls,
        count(*) FILTER (WHERE status <> 'ok') AS failed_calls,
        count(DISTINCT doc_id) AS documents_called,
        sum(prompt_tokens) AS prompt_tokens,
        sum(cached_tokens) AS cached_tokens,
        sum(completion_tokens) AS completion_tokens,
        sum(cost_usd) AS cost_usd
    FROM calls
    GROUP BY run_id
)
SELECT
    r.run_id, r.flow_run_id, r.started_at, r.finished_at,
    epoch(r.finished_at - r.started_at) AS duration_s,
    r.folder, r.profile, r.model, r.backend, r.status,
    r.documents_ok, r.documents_skipped, r.documents_failed,
    coalesce(c.calls, 0) AS calls,
    coalesce(c.failed_calls, 0) AS failed_calls,
    coalesce(c.documents_called, 0) AS documents_called,
    coalesce(c.prompt_tokens, 0) AS prompt_tokens,
    coalesce(c.cached_tokens, 0) AS cached_tokens,
    coalesce(c.completion_tokens, 0) AS completion_tokens,
    coalesce(c.cost_usd, 0) AS cost_usd,
    c.cached_tokens / nullif(c.prompt_tokens, 0) AS cached_share
FROM runs AS r
LEFT JOIN per_run AS c ON c.run_id = r.run_id;

-- Per run and model: how much of the prompt came from the provider's prefix cache, and what
-- that saved against paying the miss price for every prompt token.
CREATE VIEW cache_efficiency AS
SELECT
    c.run_id,
    any_value(r.started_at) AS run_started_at,
    c.model,
    count(*) AS calls,
    sum(c.prompt_tokens) AS prompt_tokens,
    sum(c.cached_tokens) AS cached_tokens,
    sum(c.cached_tokens) / nullif(sum(c.prompt_tokens), 0) AS cached_share,
    sum(c.cost_usd) AS cost_usd,
    sum(c.cached_tokens) * (any_value(p.price_cache_miss) - any_value(p.price_cache_hit)) / 1e6 AS saved_usd,
    sum(c.cost_usd)
        + sum(c.cached_tokens) * (any_value(p.price_cache_miss) - any_value(p.price_cache_hit)) / 1e6
        AS cost_without_cache_usd
FROM calls AS c
LEFT JOIN model_prices AS p ON p.model = c.model
LEFT JOIN runs AS r ON r.run_id = c.run_id
GROUP BY c.run_id, c.model;

-- Failures of the 20 most recent runs, newest first, with the run's folder and profile.
CREATE VIEW failures_recent AS
SELECT f.*, r.folder, r.profile, r.started_at AS run_started_at
FROM failures AS f
LEFT JOIN runs AS r ON r.run_id = f.run_id
WHERE f.run_id IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 20)
ORDER BY f.failed_at DESC;
