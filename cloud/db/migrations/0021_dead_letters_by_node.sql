-- A node's dead letters, counted for its limit (DEAD_LETTERS_PER_NODE) on every batch that
-- brings some, and listed newest first by the API's node filter.
CREATE INDEX IF NOT EXISTS ingest_dead_letters_node ON ingest_dead_letters (node_id, id);
