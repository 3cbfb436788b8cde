-- Which unit an edge node serves (a village box, a town box): the fleet registry grows
-- from here; node visibility by jurisdiction reads it.
CREATE TABLE IF NOT EXISTS nodes (
    node_id text PRIMARY KEY,
    unit_code text NOT NULL REFERENCES org_units (code),
    tier text NOT NULL CHECK (tier IN ('county', 'town', 'village')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nodes_unit ON nodes (unit_code text_pattern_ops);
