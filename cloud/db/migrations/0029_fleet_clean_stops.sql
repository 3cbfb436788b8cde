-- A box stopped in order (its agent said clean_shutdown: a restart, an update, a technician
-- at work) is offline but has not dropped its link: neither that change nor its coming back
-- counts towards flapping. `clean` remembers, while the box is offline, that it went so.
ALTER TABLE fleet_status ADD COLUMN IF NOT EXISTS clean boolean NOT NULL DEFAULT false;
