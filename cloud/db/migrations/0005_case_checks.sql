-- Verified closure: the service asks the camera's node to look at the zone again before a
-- case closes; the node's answer (command_responses) and its snapshot (snapshots, keyed by
-- the request id) are joined to the check.
CREATE TABLE IF NOT EXISTS case_checks (
    request_id uuid PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (case_id),
    node_id text NOT NULL,
    camera_id text NOT NULL,
    rule_id text NOT NULL,
    requested_at timestamptz NOT NULL,
    requested_by text NOT NULL,
    sent_at timestamptz,
    error text
);
CREATE INDEX IF NOT EXISTS case_checks_case ON case_checks (case_id, requested_at);
