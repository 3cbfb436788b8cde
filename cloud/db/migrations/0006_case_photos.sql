-- Photos of a case: a grid worker's report, the handling, the result. The bytes are in the
-- snapshot store; here is who uploaded what, when.
CREATE TABLE IF NOT EXISTS case_photos (
    photo_id uuid PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (case_id),
    uploaded_by text NOT NULL,
    uploaded_at timestamptz NOT NULL,
    content_type text NOT NULL,
    size_bytes integer NOT NULL,
    sha256 text NOT NULL,
    storage_key text NOT NULL
);
CREATE INDEX IF NOT EXISTS case_photos_case ON case_photos (case_id, uploaded_at);
