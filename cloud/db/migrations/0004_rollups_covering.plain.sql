-- The rollups answer "counts per hour for a unit" from the index alone (an index-only
-- scan): a town over 90 days is ~160k rows of a county's 13M, too many to fetch from the heap.
DROP INDEX IF EXISTS events_hourly_unit;
CREATE INDEX IF NOT EXISTS events_hourly_unit_counts
    ON events_hourly (unit_code text_pattern_ops, bucket) INCLUDE (kind, events);
DROP INDEX IF EXISTS events_daily_unit;
CREATE INDEX IF NOT EXISTS events_daily_unit_counts
    ON events_daily (unit_code text_pattern_ops, bucket) INCLUDE (kind, events);
