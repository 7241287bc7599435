-- 0004: which process owns a run, so a run whose process died (SIGKILL, OOM, power loss) can be
-- marked 'crashed' by the next run on the same host instead of staying 'running' forever.
ALTER TABLE runs ADD COLUMN host VARCHAR;
ALTER TABLE runs ADD COLUMN pid INTEGER;
