-- Counts that include the current hour and day (real-time: what is not materialised yet is
-- read from events), telemetry compressed like the other time series, and the hours that
-- late events touched below the aggregates' refresh windows, for `refresh_late`.
ALTER MATERIALIZED VIEW events_hourly SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW events_daily SET (timescaledb.materialized_only = false);

ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'node_id, sensor_id',
    timescaledb.compress_orderby = 'observed_at DESC, quantity'
);

-- One row per aggregate and hour that late rows changed; `version` moves on every new mark,
-- so a refresh removes only the marks it has seen (a batch committing during the refresh
-- leaves its mark).
CREATE TABLE IF NOT EXISTS aggregate_late_hours (
    aggregate text NOT NULL,
    bucket timestamptz NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (aggregate, bucket)
);
