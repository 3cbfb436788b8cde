-- no-transaction: continuous aggregates cannot be created inside a transaction block.
-- Daily buckets start at local midnight ({timezone}). TimescaleDB: hypertables sized for a county (1,500 analysed channels, ~50 events/s on
-- average: a day of events is a few hundred MB), compressed by camera and kind, and
-- continuous aggregates with the same names and columns as the plain rollup tables.

SELECT create_hypertable('events', by_range('observed_at', INTERVAL '1 day'), if_not_exists => TRUE);
SELECT create_hypertable('node_health', by_range('sent_at', INTERVAL '1 day'), if_not_exists => TRUE);
SELECT create_hypertable('telemetry', by_range('observed_at', INTERVAL '7 days'), if_not_exists => TRUE);

ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'camera_id, kind',
    timescaledb.compress_orderby = 'observed_at DESC, event_id'
);
ALTER TABLE node_health SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'node_id',
    timescaledb.compress_orderby = 'sent_at DESC'
);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', observed_at) AS bucket, unit_code, node_id, camera_id,
       kind, count(*) AS events
FROM events WHERE phase = 'start'
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_daily WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 day', bucket, '{timezone}') AS bucket, unit_code, node_id, camera_id, kind,
       sum(events)::bigint AS events
FROM events_hourly
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;
