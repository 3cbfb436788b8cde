-- The org tree, the people who act in it, the closed loop of cases, and the audit log.

-- County → towns → villages/communities → grids. A child's code extends its parent's
-- (administrative codes do), so "inside a unit" is a prefix test that indexes answer.
CREATE TABLE IF NOT EXISTS org_units (
    code text PRIMARY KEY,
    parent_code text REFERENCES org_units (code),
    level text NOT NULL CHECK (level IN ('county', 'town', 'village', 'grid')),
    name text NOT NULL,
    -- 'town' or 'subdistrict'; 'village' or 'community'; free for grids.
    category text NOT NULL DEFAULT '',
    -- GeoJSON geometry: a polygon for grids, a point for centres.
    geometry jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((level = 'county') = (parent_code IS NULL)),
    CHECK (parent_code IS NULL OR (code LIKE parent_code || '%' AND code <> parent_code))
);
CREATE INDEX IF NOT EXISTS org_units_parent ON org_units (parent_code);
CREATE INDEX IF NOT EXISTS org_units_code_prefix ON org_units (code text_pattern_ops);

CREATE TABLE IF NOT EXISTS departments (
    code text PRIMARY KEY,
    name text NOT NULL,
    unit_code text NOT NULL REFERENCES org_units (code)
);

-- People and apps that sign in. `unit_code` is their jurisdiction.
CREATE TABLE IF NOT EXISTS users (
    username text PRIMARY KEY,
    display_name text NOT NULL,
    role text NOT NULL,
    unit_code text NOT NULL REFERENCES org_units (code),
    department_code text REFERENCES departments (code),
    -- grid_chief, grid_worker, duty_staff, operator, ...; employment full_time / part_time.
    duty text NOT NULL DEFAULT '',
    employment text NOT NULL DEFAULT 'full_time',
    phone text NOT NULL DEFAULT '',
    password_hash text,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'department_officer') = (department_code IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS users_unit ON users (unit_code text_pattern_ops);

-- Long-lived tokens for apps and integrations; only a hash of the secret is kept.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id uuid PRIMARY KEY,
    name text NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE,
    role text NOT NULL,
    unit_code text NOT NULL REFERENCES org_units (code),
    department_code text REFERENCES departments (code),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz
);

-- The key that signs access tokens when none is configured: shared by every instance.
CREATE TABLE IF NOT EXISTS signing_keys (
    name text PRIMARY KEY,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Who did what, when, from where. Append-only: updates and deletes are refused.
CREATE TABLE IF NOT EXISTS audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    unit_code text NOT NULL DEFAULT '',
    remote_addr text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target_type, target_id, id);
CREATE INDEX IF NOT EXISTS audit_log_unit ON audit_log (unit_code text_pattern_ops, id);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
'BEGIN RAISE EXCEPTION ''audit_log is append-only'' USING ERRCODE = ''insufficient_privilege''; END';
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Which kinds open cases, and the deadlines per category and severity. The service
-- writes its configured rules here at start, so ingest routes with one join.
CREATE TABLE IF NOT EXISTS case_rules (
    category text NOT NULL,
    severity text NOT NULL,
    opens_case boolean NOT NULL,
    source text NOT NULL,
    start_level text NOT NULL CHECK (start_level IN ('grid', 'village', 'town', 'county')),
    ack_s integer NOT NULL CHECK (ack_s > 0),
    resolve_s integer NOT NULL CHECK (resolve_s > 0),

    PRIMARY KEY (category, severity)
);

CREATE TABLE IF NOT EXISTS cases (
    case_id uuid PRIMARY KEY,
    -- camera: a detection; fleet: a camera or node problem (a work order); report: a grid
    -- worker's report; operator: opened by hand.
    source text NOT NULL CHECK (source IN ('camera', 'fleet', 'report', 'operator')),
    category text NOT NULL,
    severity text NOT NULL,
    state text NOT NULL,
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- Where it happened (a grid, or the unit a road camera belongs to) ...
    unit_code text NOT NULL REFERENCES org_units (code),
    -- ... and the tier that must act now: escalation moves it up.
    responsible_unit_code text NOT NULL REFERENCES org_units (code),
    supervision_level integer NOT NULL DEFAULT 0,
    escalations integer NOT NULL DEFAULT 0,
    node_id text,
    camera_id text,
    -- Repeated detections of one camera and kind merge into the open case with this key.
    merge_key text,
    first_event_id uuid,
    event_count integer NOT NULL DEFAULT 0,
    first_event_at timestamptz,
    last_event_at timestamptz,
    location jsonb,
    reporter text,
    assignee text,
    opened_at timestamptz NOT NULL,
    ack_due_at timestamptz,
    resolve_due_at timestamptz,
    reminded_at timestamptz,
    acknowledged_at timestamptz,
    dispatched_at timestamptz,
    resolved_at timestamptz,
    closed_at timestamptz,
    close_reason text,
    false_alarm boolean NOT NULL DEFAULT false,
    satisfaction integer CHECK (satisfaction BETWEEN 1 AND 5),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS cases_open_merge_key ON cases (merge_key)
    WHERE state <> 'closed' AND merge_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_unit_open ON cases (unit_code text_pattern_ops, opened_at DESC)
    WHERE state <> 'closed';
CREATE INDEX IF NOT EXISTS cases_unit_time ON cases (unit_code text_pattern_ops, opened_at DESC);
CREATE INDEX IF NOT EXISTS cases_ack_due ON cases (ack_due_at) WHERE state = 'intake';
CREATE INDEX IF NOT EXISTS cases_resolve_due ON cases (resolve_due_at) WHERE state <> 'closed';

-- The situations (edge event threads) merged into a case.
CREATE TABLE IF NOT EXISTS case_threads (
    thread_id uuid NOT NULL,
    case_id uuid NOT NULL REFERENCES cases (case_id),
    first_event_id uuid NOT NULL,
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (thread_id, case_id)
);
CREATE INDEX IF NOT EXISTS case_threads_case ON case_threads (case_id);

-- Who handles it: a unit and/or departments (joint handling); each reports its part done.
CREATE TABLE IF NOT EXISTS case_assignments (
    case_id uuid NOT NULL REFERENCES cases (case_id),
    assignee_type text NOT NULL CHECK (assignee_type IN ('unit', 'department')),
    code text NOT NULL,
    dispatched_at timestamptz NOT NULL,
    dispatched_by text NOT NULL,
    resolved_at timestamptz,
    resolved_by text,
    PRIMARY KEY (case_id, assignee_type, code)
);
CREATE INDEX IF NOT EXISTS case_assignments_code ON case_assignments (assignee_type, code);

-- Every step of every case: who, when, from which state to which, and what they said.
CREATE TABLE IF NOT EXISTS case_history (
    id bigserial PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (case_id),
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    from_state text,
    to_state text,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS case_history_case ON case_history (case_id, id);
