-- 0006: how many pages of a summary could not be read (a chunk whose answer stayed unusable).
-- A summary with pages_failed > 0 is not finished: the next run reads the document again, reusing
-- every call that succeeded (by request key) and paying only for the missing chunks.
-- Summaries stored before this column existed count as failed when their document ended 'partial'.
ALTER TABLE summaries ADD COLUMN pages_failed INTEGER DEFAULT 0;
UPDATE summaries SET pages_failed = CASE
    WHEN doc_id IN (SELECT doc_id FROM documents WHERE status = 'partial')
        THEN greatest(coalesce(pages_total, 0) - coalesce(pages_read, 0), 1)
    ELSE 0
END;
