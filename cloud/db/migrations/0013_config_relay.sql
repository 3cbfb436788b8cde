-- Desired configs the broker has not taken yet (issued while it was away): the service's
-- config relay looks them up every few seconds.
CREATE INDEX IF NOT EXISTS node_configs_unpublished ON node_configs (node_id, version)
    WHERE published_at IS NULL;
