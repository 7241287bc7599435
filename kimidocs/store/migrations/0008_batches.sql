-- 0008: runs through Kimi's Batch API (kimidocs/batchrun.py). A call answered by a batch line carries the
-- batch's id; every batch a run submits is recorded the moment it is created, with the request keys it
-- carries, so a rerun picks it up (polls it, downloads its results) instead of submitting them again.
ALTER TABLE calls ADD COLUMN batch_id VARCHAR;

CREATE TABLE batches (
    batch_id      VARCHAR PRIMARY KEY,
    run_id        VARCHAR NOT NULL,
    folder        VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    input_file_id VARCHAR NOT NULL,
    round         INTEGER NOT NULL,
    request_keys  VARCHAR[] NOT NULL,
    status        VARCHAR NOT NULL,
    estimate_usd  DOUBLE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    done          BOOLEAN NOT NULL DEFAULT false
);
