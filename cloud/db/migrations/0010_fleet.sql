-- The fleet registry and what the service knows of each node between its health reports.

-- What a node and a camera are, beyond the unit they serve (from the org import).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS balena_uuid text;
-- The heartbeat interval of the node's desired config (null: the service's default).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS heartbeat_s real;
ALTER TABLE cameras ADD COLUMN IF NOT EXISTS name text;
-- Without credentials: they live only in the node's desired config.
ALTER TABLE cameras ADD COLUMN IF NOT EXISTS stream_url text;
ALTER TABLE cameras ADD COLUMN IF NOT EXISTS lon double precision;
ALTER TABLE cameras ADD COLUMN IF NOT EXISTS lat double precision;

-- The newest health report per node, replaced once per ingest batch (not once per report):
-- the heartbeat the fleet status reads and the figures of the overview, with no scan of
-- the history. Room left in each page so the updates stay HOT (no index churn).
CREATE TABLE IF NOT EXISTS node_last_health (
    node_id text PRIMARY KEY,
    sent_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    uptime_s real NOT NULL,
    cpu_percent real NOT NULL,
    memory_used_bytes bigint NOT NULL,
    memory_total_bytes bigint NOT NULL,
    disk_used_bytes bigint NOT NULL,
    disk_total_bytes bigint NOT NULL,
    temperature_c real,
    outbox_depth bigint NOT NULL,
    outbox_oldest_age_s real,
    dropped_events bigint NOT NULL,
    dropped_snapshots bigint NOT NULL,
    cameras_connected integer NOT NULL,
    cameras_total integer NOT NULL,
    cameras jsonb NOT NULL,
    model_profile text,
    inference_p95_ms real,
    agent_version text NOT NULL,
    config_version integer
) WITH (fillfactor = 50);

-- What the fleet monitor last concluded per node, and each change: the changes within a
-- window tell a flapping link from a dead box.
CREATE TABLE IF NOT EXISTS fleet_status (
    node_id text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('online', 'offline')),
    since timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_transitions (
    node_id text NOT NULL,
    at timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('online', 'offline')),
    PRIMARY KEY (node_id, at)
);
CREATE INDEX IF NOT EXISTS fleet_transitions_at ON fleet_transitions (at);


-- Desired configs the service issued, every version kept: what a node was told, when, by whom.
CREATE TABLE IF NOT EXISTS node_configs (
    node_id text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    config jsonb NOT NULL,
    issued_at timestamptz NOT NULL,
    issued_by text NOT NULL,
    published_at timestamptz,
    PRIMARY KEY (node_id, version)
);

-- Commands the service sent, and who asked; the answers are in command_responses.
CREATE TABLE IF NOT EXISTS commands (
    request_id uuid PRIMARY KEY,
    node_id text NOT NULL,
    command text NOT NULL,
    args jsonb NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    issued_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_node ON commands (node_id, issued_at DESC);
CREATE INDEX IF NOT EXISTS command_responses_node ON command_responses (node_id);

-- A node's liveness at a moment: offline when its state says so (its last will, or a clean
-- shutdown) or when nothing was heard from it for `p_missed` heartbeats; unknown when it is
-- registered but was never heard. The one definition the fleet monitor and screens read.
CREATE OR REPLACE FUNCTION node_liveness(p_at timestamptz, p_heartbeat_s double precision,
                                         p_missed integer)
RETURNS TABLE (node_id text, status text, last_seen_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT k.node_id,
           CASE WHEN s.status = 'offline' THEN 'offline'
                WHEN seen.at IS NULL THEN 'unknown'
                WHEN seen.at < p_at - make_interval(
                         secs => coalesce(n.heartbeat_s, p_heartbeat_s) * p_missed) THEN 'offline'
                ELSE 'online' END,
           seen.at
    FROM (SELECT node_id FROM nodes UNION SELECT node_id FROM node_state
          UNION SELECT node_id FROM node_last_health) k
    LEFT JOIN nodes n ON n.node_id = k.node_id
    LEFT JOIN node_state s ON s.node_id = k.node_id
    LEFT JOIN node_last_health h ON h.node_id = k.node_id
    CROSS JOIN LATERAL (
        SELECT greatest(h.received_at,
                        CASE WHEN s.status = 'online' THEN s.received_at END) AS at
    ) seen
$$;
