-- 0005: where a call's token counts come from. 'reported' = the server's usage; 'estimated' = the
-- server sent none (an OpenAI-style server streaming without include_usage), so the tokens and the cost
-- are our own count, never a silent zero. NULL for calls logged before this migration.
ALTER TABLE calls ADD COLUMN usage_source VARCHAR;
