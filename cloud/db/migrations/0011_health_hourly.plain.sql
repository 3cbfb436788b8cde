-- Plain PostgreSQL: hourly health per node, kept up to date by ingest (sums and extremes,
-- so a batch adds to its hour without reading the history back).
CREATE TABLE IF NOT EXISTS node_health_hourly (
    bucket timestamptz NOT NULL,
    node_id text NOT NULL,
    samples bigint NOT NULL,
    cpu_sum double precision NOT NULL,
    cpu_max real NOT NULL,
    memory_used_max bigint NOT NULL,
    disk_used_max bigint NOT NULL,
    disk_total_max bigint NOT NULL,
    temperature_max real,
    outbox_depth_max bigint NOT NULL,
    outbox_age_max real,
    cameras_connected_min integer NOT NULL,
    cameras_total_max integer NOT NULL,
    PRIMARY KEY (node_id, bucket)
);
