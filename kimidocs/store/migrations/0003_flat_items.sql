-- 0003: one row per list item of the latest summaries, for BI tools that cannot UNNEST.
-- item_no counts from 1 in the order the model gave the items.

CREATE VIEW summary_key_points AS
SELECT s.doc_id, s.path, s.profile, s.prompt_version, s.model,
       t.item_no, t.item.point AS point, t.item.pages AS pages, t.item.evidence AS evidence
FROM latest_summaries AS s,
     LATERAL (SELECT unnest(s.key_points) AS item, generate_subscripts(s.key_points, 1) AS item_no) AS t;

CREATE VIEW summary_entities AS
SELECT s.doc_id, s.path, s.profile, s.prompt_version, s.model,
       t.item_no, t.item.name AS name, t.item.type AS type
FROM latest_summaries AS s,
     LATERAL (SELECT unnest(s.entities) AS item, generate_subscripts(s.entities, 1) AS item_no) AS t;

CREATE VIEW summary_dates AS
SELECT s.doc_id, s.path, s.profile, s.prompt_version, s.model,
       t.item_no, t.item.date AS date, t.item.precision AS "precision", t.item.date_text AS date_text,
       t.item.what AS what, t.item.pages AS pages
FROM latest_summaries AS s,
     LATERAL (SELECT unnest(s.dates) AS item, generate_subscripts(s.dates, 1) AS item_no) AS t;

CREATE VIEW summary_amounts AS
SELECT s.doc_id, s.path, s.profile, s.prompt_version, s.model,
       t.item_no, t.item.value AS "value", t.item.currency AS currency, t.item.value_text AS value_text,
       t.item.what AS what, t.item.pages AS pages
FROM latest_summaries AS s,
     LATERAL (SELECT unnest(s.amounts) AS item, generate_subscripts(s.amounts, 1) AS item_no) AS t;
