-- The county's case rules, versioned: each set kept with who set it, when and why; the
-- case_rules table holds the rows of the newest, which ingest joins. Only `gridwatch cloud
-- rules set` and the county admin's API change them. (Every process used to write its own
-- settings' rules at start: importing one staff row took the acknowledge deadline from
-- 60 s to 7,200 s, and cases stopped escalating.)
CREATE TABLE IF NOT EXISTS case_rule_sets (
    version serial PRIMARY KEY,
    rules jsonb NOT NULL,
    set_by text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL
);
