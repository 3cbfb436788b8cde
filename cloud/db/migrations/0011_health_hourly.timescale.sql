-- no-transaction: continuous aggregates cannot be created inside a transaction block.
-- Hourly health per node, with the same names and columns as the plain rollup table;
-- real-time (the hour not yet materialised is read from node_health), so a box page shows
-- the current hour too.
CREATE MATERIALIZED VIEW IF NOT EXISTS node_health_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', sent_at) AS bucket, node_id,
       count(*) AS samples, sum(cpu_percent)::double precision AS cpu_sum,
       max(cpu_percent) AS cpu_max, max(memory_used_bytes) AS memory_used_max,
       max(disk_used_bytes) AS disk_used_max, max(disk_total_bytes) AS disk_total_max,
       max(temperature_c) AS temperature_max, max(outbox_depth) AS outbox_depth_max,
       max(outbox_oldest_age_s) AS outbox_age_max,
       min(cameras_connected) AS cameras_connected_min, max(cameras_total) AS cameras_total_max
FROM node_health
GROUP BY 1, 2
WITH NO DATA;
