-- Messages of a box beyond its share of ingest (CLOUD_INGEST_NODE_RATE), kept as they came
-- and taken up when ingest has room: one box sending thousands of valid events a second
-- delayed every other box's by 20 s and more, in the one queue all boxes share. Nothing is
-- decoded on the way in; a box's bytes waiting here are counted in ingest_deferred_nodes,
-- whose limit (CLOUD_INGEST_NODE_DEFERRED_MAX_MB) bounds what one box can park.
CREATE TABLE IF NOT EXISTS ingest_deferred (
    id bigserial PRIMARY KEY,
    node_id text NOT NULL,
    topic text NOT NULL,
    payload bytea NOT NULL,
    received_at timestamptz NOT NULL
);
-- Each box's oldest first, as its share allows.
CREATE INDEX IF NOT EXISTS ingest_deferred_node ON ingest_deferred (node_id, id);
CREATE TABLE IF NOT EXISTS ingest_deferred_nodes (
    node_id text PRIMARY KEY,
    bytes bigint NOT NULL DEFAULT 0
);
