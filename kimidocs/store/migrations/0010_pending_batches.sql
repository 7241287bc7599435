-- 0010: a batch's row is written before the server is asked to create it (status `pending`, keyed by
-- its uploaded input file), then given the server's batch id; a rerun resolves a pending row by looking
-- for a batch made from that file (adopt it) or creating one now. So `batch_id` becomes nullable and the
-- key moves to `input_file_id` (every upload has its own id). DuckDB cannot drop a primary key: rebuild.
CREATE TABLE batches_0010 (
    input_file_id VARCHAR PRIMARY KEY,
    batch_id      VARCHAR,
    run_id        VARCHAR NOT NULL,
    folder        VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    round         INTEGER NOT NULL,
    request_keys  VARCHAR[] NOT NULL,
    status        VARCHAR NOT NULL,
    estimate_usd  DOUBLE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    done          BOOLEAN NOT NULL DEFAULT false
);
INSERT INTO batches_0010 SELECT input_file_id, batch_id, run_id, folder, model, round, request_keys, status,
    estimate_usd, created_at, updated_at, done FROM batches;
DROP TABLE batches;
ALTER TABLE batches_0010 RENAME TO batches;
