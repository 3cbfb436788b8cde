-- A dead letter describes a message, it does not keep it: its size, sha256 and first bytes
-- (a box could send megabytes of junk, and every byte used to stay forever). One row per
-- distinct message on a topic: a redelivery counts, it adds no row.
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS node_id text;
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS size_bytes integer;
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS sha256 text;
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS prefix bytea;
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS cause text NOT NULL DEFAULT 'invalid';
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS deliveries integer NOT NULL DEFAULT 1;
ALTER TABLE ingest_dead_letters ADD COLUMN IF NOT EXISTS last_received_at timestamptz;

UPDATE ingest_dead_letters SET
    size_bytes = length(payload),
    sha256 = encode(sha256(payload), 'hex'),
    prefix = substring(payload FROM 1 FOR 256),
    last_received_at = received_at,
    node_id = CASE WHEN topic LIKE 'gw/v1/nodes/%' THEN split_part(topic, '/', 4) END;

DELETE FROM ingest_dead_letters d USING ingest_dead_letters k
WHERE d.topic = k.topic AND d.sha256 = k.sha256 AND d.id > k.id;

ALTER TABLE ingest_dead_letters DROP COLUMN payload;
ALTER TABLE ingest_dead_letters ALTER COLUMN size_bytes SET NOT NULL;
ALTER TABLE ingest_dead_letters ALTER COLUMN sha256 SET NOT NULL;
ALTER TABLE ingest_dead_letters ALTER COLUMN prefix SET NOT NULL;
ALTER TABLE ingest_dead_letters ALTER COLUMN last_received_at SET NOT NULL;
ALTER TABLE ingest_dead_letters ALTER COLUMN last_received_at SET DEFAULT now();

CREATE UNIQUE INDEX IF NOT EXISTS ingest_dead_letters_message
    ON ingest_dead_letters (topic, sha256);
-- Retention drops by the last delivery.
CREATE INDEX IF NOT EXISTS ingest_dead_letters_last ON ingest_dead_letters (last_received_at);
