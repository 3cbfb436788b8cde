-- Provisioning: each node's broker account and its commissioning checks.

-- The node's broker password as a Mosquitto hash, never the password. A rotation first
-- keeps the new one as `pending_hash` (delivered to the box beside the current one), then
-- activates it: the old one is refused from the broker's next reload on.
CREATE TABLE IF NOT EXISTS node_credentials (
    node_id text PRIMARY KEY,
    password_hash text NOT NULL,
    pending_hash text,
    issued_at timestamptz NOT NULL DEFAULT now(),
    issued_by text NOT NULL
);

-- What a technician's checks found on site (cameras, broker, clock, disk, model).
CREATE TABLE IF NOT EXISTS commissioning (
    id bigserial PRIMARY KEY,
    node_id text NOT NULL,
    checked_at timestamptz NOT NULL,
    passed boolean NOT NULL,
    checks jsonb NOT NULL,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS commissioning_node ON commissioning (node_id, checked_at DESC);

-- The broker's files follow the accounts: `gridwatch cloud broker sync --follow` listens.
CREATE OR REPLACE FUNCTION notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gridwatch_credentials', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS node_credentials_notify ON node_credentials;
CREATE TRIGGER node_credentials_notify AFTER INSERT OR UPDATE OR DELETE ON node_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials();
