-- The fleet registry and what the service knows of each node between its health reports.

-- What a node and a camera are, beyond the unit they serve (from the org import).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS balena_uuid text;
-- The heartbeat interval of the node's desired config (null: the service's default).
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS heartbeat_s real;
-- A retired box keeps its history; it leaves the fleet's lists and loses its broker account.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS retired_at timestamptz;
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

-- Every node known by any means (registered, its state, its health) at a moment: offline
-- when its state says so (its last will, or a clean shutdown) or when nothing was heard
-- from it for `p_missed` heartbeats; unknown when registered but never heard; with what
-- the registry and its newest health report say. The one definition of a node's liveness
-- that the fleet monitor, the screens and the metrics read.
DROP FUNCTION IF EXISTS node_liveness(timestamptz, double precision, integer);
CREATE FUNCTION node_liveness(p_at timestamptz, p_heartbeat_s double precision,
                              p_missed integer)
RETURNS TABLE (
    node_id text, status text, last_seen_at timestamptz, unit_code text, name text,
    tier text, balena_uuid text, cameras_connected integer, cameras_total integer,
    cpu_percent real, temperature_c real, disk_used_bytes bigint, disk_total_bytes bigint,
    outbox_depth bigint, outbox_oldest_age_s real, dropped_events bigint,
    dropped_snapshots bigint, agent_version text, config_version integer, model_profile text,
    inference_p95_ms real, uptime_s real
)
LANGUAGE sql STABLE AS $$
    SELECT k.node_id,
           CASE WHEN s.status = 'offline' THEN 'offline'
                WHEN seen.at IS NULL THEN 'unknown'
                WHEN seen.at < p_at - make_interval(
                         secs => coalesce(n.heartbeat_s, p_heartbeat_s) * p_missed) THEN 'offline'
                ELSE 'online' END,
           seen.at, n.unit_code, n.name, n.tier, n.balena_uuid, h.cameras_connected,
           h.cameras_total, h.cpu_percent, h.temperature_c, h.disk_used_bytes,
           h.disk_total_bytes, h.outbox_depth, h.outbox_oldest_age_s, h.dropped_events,
           h.dropped_snapshots, h.agent_version, h.config_version, h.model_profile,
           h.inference_p95_ms, h.uptime_s
    FROM nodes n
    FULL JOIN node_state s ON s.node_id = n.node_id
    FULL JOIN node_last_health h ON h.node_id = coalesce(n.node_id, s.node_id)
    CROSS JOIN LATERAL (SELECT coalesce(n.node_id, s.node_id, h.node_id) AS node_id) k
    CROSS JOIN LATERAL (
        SELECT greatest(h.received_at,
                        CASE WHEN s.status = 'online' THEN s.received_at END) AS at
    ) seen
    WHERE n.retired_at IS NULL
$$;
