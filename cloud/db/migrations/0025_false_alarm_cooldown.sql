-- After a false alarm is dismissed, the same camera and kind open no case for a cooldown
-- (the rules' false_alarm_cooldown_s): their events are counted on the dismissed case.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS suppressed_events integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS cases_false_alarms ON cases (merge_key, closed_at) WHERE false_alarm;
