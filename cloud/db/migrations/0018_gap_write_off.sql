-- An operator may write off a sequence gap (issue 19): a box whose firmware jumped its seq,
-- or whose outbox was wiped on site, leaves a gap that no event will ever fill. Closing it
-- by hand says who and why; the audit log holds the same, with the time.
ALTER TABLE seq_gaps ADD COLUMN IF NOT EXISTS written_off_by text;
ALTER TABLE seq_gaps ADD COLUMN IF NOT EXISTS write_off_reason text;
