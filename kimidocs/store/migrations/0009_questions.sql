-- 0009: answers of `kimidocs ask FILE "question" ...`: one row per question asked, appended (asking
-- again adds a row). `pages` and `evidence` are the answer's citation after the check against the
-- document's pages (a quote not on its pages drops the answer: answer NULL, `error` says why; a
-- question whose calls failed has a row too). 0008 is left free for work in parallel.
CREATE TABLE questions (
    doc_id        VARCHAR NOT NULL,
    question_no   INTEGER NOT NULL,
    question      VARCHAR NOT NULL,
    answer        VARCHAR,
    pages         INTEGER[],
    evidence      VARCHAR,
    model         VARCHAR NOT NULL,
    backend       VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    coverage      DOUBLE,
    calls         INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    cost_usd      DOUBLE,
    error         VARCHAR
);
