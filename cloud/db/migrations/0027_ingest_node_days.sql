-- What each box has had stored in a county day, in ingest's message units, counted by every
-- ingest process in its batches' transactions: beyond CLOUD_INGEST_NODE_DAILY_UNITS the box's
-- messages are parked until the next day (cloud.ingest.deferred).
CREATE TABLE IF NOT EXISTS ingest_node_days (
    node_id text NOT NULL,
    day date NOT NULL,
    units bigint NOT NULL,
    PRIMARY KEY (node_id, day)
);
CREATE INDEX IF NOT EXISTS ingest_node_days_day ON ingest_node_days (day);
