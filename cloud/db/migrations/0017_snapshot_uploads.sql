-- Snapshots belong to their node (issue 19). A JPEG a node publishes is recorded here as
-- it arrives, in a commit of its own before its file is written, so a file whose batch
-- never commits is still found and removed. It waits here until an event (or a command
-- answer) of the same node lists its variant and sha256; only then does a `snapshots` row
-- point at it. What is refused, or has no owner within CLOUD_INGEST_SNAPSHOT_WAIT_S, is
-- removed, file and row, by ingest's sweep (cloud/ingest/snapshot_uploads.py).
-- written: the file is stored and the batch that stored it committed.
CREATE TABLE IF NOT EXISTS snapshot_uploads (
    storage_key text PRIMARY KEY,
    node_id text NOT NULL,
    event_id uuid NOT NULL,
    variant text NOT NULL,
    sha256 text NOT NULL,
    size_bytes integer NOT NULL,
    received_at timestamptz NOT NULL,
    written boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS snapshot_uploads_event ON snapshot_uploads (event_id);
CREATE INDEX IF NOT EXISTS snapshot_uploads_received ON snapshot_uploads (received_at);

-- A snapshot is its node's: two nodes naming one event id never share (or take) a row. The
-- key's first columns stay (event_id, variant), which is how snapshots are looked up.
-- Existing rows keep their storage keys and sha256, so they are served as before.
ALTER TABLE snapshots DROP CONSTRAINT IF EXISTS snapshots_pkey;
ALTER TABLE snapshots ADD PRIMARY KEY (event_id, variant, node_id);
