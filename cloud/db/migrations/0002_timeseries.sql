-- Time series. {partitioned} is "PARTITION BY RANGE (...)" on plain PostgreSQL (native
-- partitions the service creates ahead) and empty with TimescaleDB (hypertables next).
-- Unique keys include the time column, as both require.

CREATE TABLE IF NOT EXISTS events (
    observed_at timestamptz NOT NULL,
    event_id uuid NOT NULL,
    thread_id uuid NOT NULL,
    node_id text NOT NULL,
    seq bigint NOT NULL,
    camera_id text NOT NULL,
    unit_code text NOT NULL DEFAULT '',
    kind text NOT NULL,
    phase text NOT NULL,
    severity text NOT NULL,
    rule_id text,
    label text,
    score real,
    bbox real[],
    track_id bigint,
    zone text,
    direction text,
    dwell_s real,
    count integer,
    tamper text,
    snapshots jsonb,
    model jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- When the row was written (just before its batch commits): publish → stored latency.
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (observed_at, event_id)
) {partitioned_observed_at};
CREATE INDEX IF NOT EXISTS events_event_id ON events (event_id);

CREATE INDEX IF NOT EXISTS events_node_time ON events (node_id, observed_at DESC);
CREATE INDEX IF NOT EXISTS events_unit_time ON events (unit_code text_pattern_ops, observed_at DESC);
CREATE INDEX IF NOT EXISTS events_thread ON events (thread_id);

CREATE TABLE IF NOT EXISTS node_health (
    sent_at timestamptz NOT NULL,
    node_id text NOT NULL,
    cpu_percent real NOT NULL,
    memory_used_bytes bigint NOT NULL,
    disk_used_bytes bigint NOT NULL,
    disk_total_bytes bigint NOT NULL,
    temperature_c real,
    outbox_depth bigint NOT NULL,
    outbox_oldest_age_s real,
    dropped_events bigint NOT NULL,
    dropped_snapshots bigint NOT NULL,
    cameras_connected integer NOT NULL,
    cameras_total integer NOT NULL,
    config_version integer,
    agent_version text NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sent_at, node_id)
) {partitioned_sent_at};
CREATE INDEX IF NOT EXISTS node_health_node_time ON node_health (node_id, sent_at DESC);

CREATE TABLE IF NOT EXISTS telemetry (
    observed_at timestamptz NOT NULL,
    telemetry_id uuid NOT NULL,
    node_id text NOT NULL,
    sensor_id text NOT NULL,
    quantity text NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (observed_at, telemetry_id, quantity)
) {partitioned_observed_at};
CREATE INDEX IF NOT EXISTS telemetry_sensor_time ON telemetry (node_id, sensor_id, observed_at DESC);
