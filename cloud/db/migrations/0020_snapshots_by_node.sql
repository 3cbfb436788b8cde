-- A box's snapshots of the last day, summed for its daily quota on every batch that brings
-- it pictures (CLOUD_INGEST_SNAPSHOT_DAILY_MAX_MB): its events may vouch for any picture
-- it sends, so only a quota stops one that makes events up to list megabytes of them.
CREATE INDEX IF NOT EXISTS snapshots_node_received ON snapshots (node_id, received_at)
    INCLUDE (size_bytes);
