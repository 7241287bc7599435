-- 0001 init: the tables of DESIGN §4. Every TIMESTAMP is UTC. Lists and structs are native
-- DuckDB types so analysts can UNNEST them; `backend` marks rows produced by the emulator.

CREATE TABLE documents (
    doc_id            VARCHAR PRIMARY KEY,   -- sha256 of the file bytes
    kind              VARCHAR,               -- pdf | docx | text
    bytes             BIGINT,
    pages             INTEGER,
    chars             BIGINT,
    tokens_est        BIGINT,                -- local o200k estimate of the whole text
    title             VARCHAR,
    author            VARCHAR,
    created           VARCHAR,               -- as the file's metadata says (ISO 8601 when it can)
    extracted_at      TIMESTAMP,
    extractor_version VARCHAR,
    warnings          VARCHAR[],
    status            VARCHAR NOT NULL,      -- ok | failed | set by the pipeline (e.g. summarized)
    error_type        VARCHAR,
    error_message     VARCHAR,
    path              VARCHAR                -- path this content was last seen at
);

CREATE TABLE files (
    path       VARCHAR PRIMARY KEY,
    doc_id     VARCHAR,                      -- NULL when the file could not be read at all
    size       BIGINT,
    mtime      TIMESTAMP,
    first_seen TIMESTAMP NOT NULL,
    last_seen  TIMESTAMP NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE pages (
    doc_id      VARCHAR NOT NULL,
    page_no     INTEGER NOT NULL,            -- from 1, as people cite pages
    page_id     VARCHAR NOT NULL,            -- doc_id || ':' || page_no, the full-text index key
    label       VARCHAR,                     -- DOCX without page breaks: which paragraphs
    text        VARCHAR NOT NULL,
    chars       INTEGER NOT NULL,
    tokens_est  INTEGER,
    image_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (doc_id, page_no)
);

CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,
    flow_run_id       VARCHAR,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP,
    folder            VARCHAR,
    profile           VARCHAR,
    model             VARCHAR,
    backend           VARCHAR,
    status            VARCHAR NOT NULL,      -- running | completed | failed | stopped | dry_run
    documents_ok      INTEGER,
    documents_skipped INTEGER,
    documents_failed  INTEGER,
    calls             INTEGER,
    prompt_tokens     BIGINT,
    cached_tokens     BIGINT,
    completion_tokens BIGINT,
    cost_usd          DOUBLE,
    message           VARCHAR
);

CREATE TABLE calls (
    call_id           VARCHAR PRIMARY KEY,
    run_id            VARCHAR NOT NULL,
    doc_id            VARCHAR,
    stage             VARCHAR NOT NULL,      -- single | map | reduce | repair | pack
    chunk_index       INTEGER,
    level             INTEGER,
    request_key       VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    backend           VARCHAR NOT NULL,
    prompt_tokens_est INTEGER,
    prompt_tokens     INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          DOUBLE NOT NULL,
    latency_ms        DOUBLE,
    ttft_ms           DOUBLE,
    attempts          INTEGER NOT NULL,
    finish_reason     VARCHAR,
    http_status       INTEGER,
    status            VARCHAR NOT NULL,      -- ok | error
    error             VARCHAR,
    response          VARCHAR,               -- the model's raw text
    started_at        TIMESTAMP
);

CREATE TABLE summaries (
    doc_id            VARCHAR NOT NULL,
    profile           VARCHAR NOT NULL,
    prompt_version    VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    run_id            VARCHAR,
    backend           VARCHAR NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    title             VARCHAR,
    document_type     VARCHAR,
    language          VARCHAR,
    summary           VARCHAR,
    key_points        STRUCT(point VARCHAR, pages INTEGER[], evidence VARCHAR)[],
    entities          STRUCT(name VARCHAR, type VARCHAR)[],
    dates             STRUCT(date DATE, "precision" VARCHAR, date_text VARCHAR, what VARCHAR, pages INTEGER[])[],
    amounts           STRUCT("value" DECIMAL(38, 4), value_text VARCHAR, currency VARCHAR, what VARCHAR, pages INTEGER[])[],
    coverage          DOUBLE,
    pages_read        INTEGER,
    pages_total       INTEGER,
    coercion_warnings VARCHAR[],
    raw               JSON,
    PRIMARY KEY (doc_id, profile, prompt_version, model)
);

CREATE TABLE failures (
    run_id     VARCHAR,
    path       VARCHAR,
    doc_id     VARCHAR,
    stage      VARCHAR NOT NULL,             -- discover | extract | plan | call | validate | store
    error_type VARCHAR NOT NULL,
    message    VARCHAR,
    failed_at  TIMESTAMP NOT NULL             -- ("at" is an SQL keyword)
);
