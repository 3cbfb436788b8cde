-- Tables that are the same with and without TimescaleDB.

CREATE TABLE IF NOT EXISTS node_state (
    node_id text PRIMARY KEY,
    status text NOT NULL,
    reason text NOT NULL,
    sent_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    agent_version text,
    boot_id uuid
);

CREATE TABLE IF NOT EXISTS config_reports (
    node_id text PRIMARY KEY,
    version integer NOT NULL,
    status text NOT NULL,
    running_version integer,
    errors jsonb NOT NULL DEFAULT '[]',
    reported_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS command_responses (
    request_id uuid PRIMARY KEY,
    node_id text NOT NULL,
    status text NOT NULL,
    data jsonb,
    error text,
    responded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Payloads that failed to decode: kept with the reason, never blocking the stream.
CREATE TABLE IF NOT EXISTS ingest_dead_letters (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    payload bytea NOT NULL,
    field text NOT NULL,
    reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_dead_letters_received ON ingest_dead_letters (received_at DESC);

-- The highest event seq seen per node, and the ranges missing below it.
CREATE TABLE IF NOT EXISTS node_sequences (
    node_id text PRIMARY KEY,
    high_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS seq_gaps (
    id bigserial PRIMARY KEY,
    node_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz,
    CHECK (first_seq <= last_seq)
);
CREATE INDEX IF NOT EXISTS seq_gaps_open ON seq_gaps (node_id, first_seq) WHERE closed_at IS NULL;

CREATE TABLE IF NOT EXISTS snapshots (
    event_id uuid NOT NULL,
    variant text NOT NULL,
    node_id text NOT NULL,
    sha256 text NOT NULL,
    size_bytes integer NOT NULL,
    storage_key text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, variant)
);

-- Which org unit a camera watches; the fleet registry owns it, ingest reads it.
CREATE TABLE IF NOT EXISTS cameras (
    node_id text NOT NULL,
    camera_id text NOT NULL,
    unit_code text,
    PRIMARY KEY (node_id, camera_id)
);

-- One row per ingest process: what it last committed, for /readyz and operators.
CREATE TABLE IF NOT EXISTS ingest_progress (
    client_id text PRIMARY KEY,
    committed_at timestamptz NOT NULL,
    batch_size integer NOT NULL,
    lag_ms double precision NOT NULL,
    messages bigint NOT NULL DEFAULT 0
);
