-- A box whose account sends what the county refuses (junk, reports beyond their throttle,
-- answers nobody asked for, more than its parking holds) faster than any fault would is
-- suspended: `gridwatch cloud broker sync` disables its broker account until `until` (the
-- broker disconnects it and refuses it meanwhile; its outbox keeps what it has), the fleet
-- monitor opens a work order, and an operator may lift it sooner.
CREATE TABLE IF NOT EXISTS node_suspensions (
    node_id text PRIMARY KEY,
    since timestamptz NOT NULL,
    until timestamptz NOT NULL,
    reason text NOT NULL,
    suspended_by text NOT NULL
);
DROP TRIGGER IF EXISTS node_suspensions_notify ON node_suspensions;
CREATE TRIGGER node_suspensions_notify AFTER INSERT OR UPDATE OR DELETE ON node_suspensions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials();
