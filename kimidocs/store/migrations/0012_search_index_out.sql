-- 0012: the full-text index left the store (issue 22). Runs no longer rebuild it over every stored page;
-- `kimidocs search` keeps it in a local file of its own, brought up to date when it runs
-- (kimidocs/store/search_index.py). The index a run left in a DuckDB file would only grow stale: drop it.
DROP SCHEMA IF EXISTS fts_main_pages CASCADE;
