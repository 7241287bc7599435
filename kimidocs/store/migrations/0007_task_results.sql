-- 0007: results of declared profiles (kimidocs/profiles): one row per document, task and work key.
-- `result` holds the answer in the stored layout (values coerced: ISO dates, exact decimal strings;
-- see kimidocs/profiles/views.py); the typed views `profile_<profile>_<task>[_<field>]` read it and
-- are (re)created by the store from each profile's declaration, recorded in `profile_views`.
-- Rows of older task versions stay here: the natural key includes task_version.
CREATE TABLE task_results (
    doc_id            VARCHAR NOT NULL,
    profile           VARCHAR NOT NULL,
    task              VARCHAR NOT NULL,
    profile_version   VARCHAR NOT NULL,
    task_version      VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    run_id            VARCHAR,
    backend           VARCHAR NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    coverage          DOUBLE,
    pages_read        INTEGER,
    pages_total       INTEGER,
    pages_failed      INTEGER DEFAULT 0,
    coercion_warnings VARCHAR[],
    result            JSON,
    raw               JSON,
    PRIMARY KEY (doc_id, profile, task, task_version, model)
);

CREATE TABLE profile_views (
    profile         VARCHAR PRIMARY KEY,
    profile_version VARCHAR NOT NULL,
    views           VARCHAR[] NOT NULL,
    created_at      TIMESTAMP NOT NULL
);
