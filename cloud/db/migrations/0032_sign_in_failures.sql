-- Sign-in failures per account ('account:<name>', whether it exists or not) and per source
-- address ('address:<ip>'), shared by every serve instance (cloud.sign_in).
CREATE TABLE IF NOT EXISTS sign_in_failures (
    key text PRIMARY KEY,
    failures integer NOT NULL,
    last_failure timestamptz NOT NULL,
    locked_until timestamptz
);
CREATE INDEX IF NOT EXISTS sign_in_failures_last ON sign_in_failures (last_failure);
