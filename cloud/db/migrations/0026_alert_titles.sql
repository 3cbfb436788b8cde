-- A person's report (a grid worker's, an operator's) is known by its title: the alert
-- carries it, since its kind alone ("grid worker's report") says nothing of what was seen.
-- Camera and fleet cases are named by their kind, as before.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS title text;

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
                        node_id, camera_id, departments, title)
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
              WHERE a.case_id = c.case_id AND a.assignee_type = 'department' ORDER BY a.code),
        CASE WHEN c.source IN ('report', 'operator') THEN c.title END
    );
    RETURN NULL;
END
$$;
