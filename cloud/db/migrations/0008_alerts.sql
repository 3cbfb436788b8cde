-- Alerts for grid apps, screens and other systems: one row per step of a case that people
-- must hear about (opened, acknowledged, dispatched, escalated, closed). `seq` orders them
-- for resuming a stream; the API renders the wire `Alert` and CAP 1.2 from the row.
CREATE TABLE IF NOT EXISTS alerts (
    seq bigserial PRIMARY KEY,
    alert_id uuid NOT NULL UNIQUE,
    sent_at timestamptz NOT NULL,
    msg_type text NOT NULL CHECK (msg_type IN ('alert', 'update', 'cancel')),
    refs uuid[] NOT NULL DEFAULT '{}',
    kind text NOT NULL,
    reason text NOT NULL,
    unit_code text NOT NULL,
    responsible_unit_code text NOT NULL,
    severity text NOT NULL,
    source text NOT NULL,
    case_id uuid REFERENCES cases (case_id),
    case_state text,
    event_id uuid,
    node_id text,
    camera_id text,
    -- Departments the case was dispatched to at the time: they hear about it too.
    departments text[] NOT NULL DEFAULT '{}',
    mqtt_published_at timestamptz
);
CREATE INDEX IF NOT EXISTS alerts_unit ON alerts (unit_code text_pattern_ops, seq);
CREATE INDEX IF NOT EXISTS alerts_case ON alerts (case_id, seq);
CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (seq) WHERE mqtt_published_at IS NULL;

-- Every path that changes a case writes its history (ingest's routing, the timers, people's
-- actions), so an alert raised from the history is raised in the same transaction, once,
-- whichever process made the change. Transactions that raise alerts take one lock first
-- (1735876978, cloud.db.alerts.ALERTS_LOCK), so `seq` follows commit order and a reader
-- that resumes after a seq never misses one committed later with a lower number.
CREATE OR REPLACE FUNCTION alert_from_case_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c cases%ROWTYPE;
    first_alert uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(1735876978);
    SELECT * INTO c FROM cases WHERE case_id = NEW.case_id;
    SELECT alert_id INTO first_alert FROM alerts
        WHERE case_id = NEW.case_id AND msg_type = 'alert' ORDER BY seq LIMIT 1;
    INSERT INTO alerts (alert_id, sent_at, msg_type, refs, kind, reason, unit_code,
                        responsible_unit_code, severity, source, case_id, case_state, event_id,
                        node_id, camera_id, departments)
    VALUES (
        gen_random_uuid(), NEW.at,
        CASE WHEN NEW.action = 'open' THEN 'alert'
             WHEN c.state = 'closed' THEN 'cancel' ELSE 'update' END,
        CASE WHEN first_alert IS NULL OR NEW.action = 'open' THEN '{}'::uuid[]
             ELSE ARRAY[first_alert] END,
        CASE WHEN c.source = 'report' THEN 'report' ELSE c.category END,
        NEW.action, c.unit_code, c.responsible_unit_code, c.severity, c.source, c.case_id,
        c.state, c.first_event_id, c.node_id, c.camera_id,
        ARRAY(SELECT a.code FROM case_assignments a
              WHERE a.case_id = c.case_id AND a.assignee_type = 'department' ORDER BY a.code)
    );
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS case_history_alerts ON case_history;
CREATE TRIGGER case_history_alerts AFTER INSERT ON case_history FOR EACH ROW
    WHEN (NEW.action IN ('open', 'acknowledge', 'dispatch', 'escalate', 'close', 'dismiss',
                         'auto_close'))
    EXECUTE FUNCTION alert_from_case_history();

-- Wake every API instance's alert hub when alerts commit (one notice per transaction).
CREATE OR REPLACE FUNCTION notify_alerts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gridwatch_alerts', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS alerts_notify ON alerts;
CREATE TRIGGER alerts_notify AFTER INSERT ON alerts FOR EACH STATEMENT
    EXECUTE FUNCTION notify_alerts();
