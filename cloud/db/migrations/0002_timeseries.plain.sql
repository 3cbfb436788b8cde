-- Plain PostgreSQL: rollup tables kept up to date by ingest (counts of situations: start
-- messages), and default partitions so nothing is refused before its day's partition exists.

CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT;
CREATE TABLE IF NOT EXISTS node_health_default PARTITION OF node_health DEFAULT;
CREATE TABLE IF NOT EXISTS telemetry_default PARTITION OF telemetry DEFAULT;

CREATE TABLE IF NOT EXISTS events_hourly (
    bucket timestamptz NOT NULL,
    unit_code text NOT NULL,
    node_id text NOT NULL,
    camera_id text NOT NULL,
    kind text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (bucket, unit_code, node_id, camera_id, kind)
);
CREATE INDEX IF NOT EXISTS events_hourly_unit ON events_hourly (unit_code text_pattern_ops, bucket);

CREATE TABLE IF NOT EXISTS events_daily (
    bucket timestamptz NOT NULL,
    unit_code text NOT NULL,
    node_id text NOT NULL,
    camera_id text NOT NULL,
    kind text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (bucket, unit_code, node_id, camera_id, kind)
);
CREATE INDEX IF NOT EXISTS events_daily_unit ON events_daily (unit_code text_pattern_ops, bucket);
