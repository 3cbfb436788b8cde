-- Ranges missing for less than the reorder window (CLOUD_INGEST_REORDER_WINDOW_S) stay with
-- the node's row instead of becoming seq_gaps rows. With several ingest processes on a
-- shared subscription, a node's stream is split between them message by message, so each
-- batch skips every other seq and the other process's next batch fills it: a row per
-- hole, written and deleted again, took a quarter of two processes' throughput. What stays
-- missing for the window becomes a seq_gaps row, detected when it was first seen.
-- holes: [[first_seq, last_seq, first seen (epoch seconds)], ...]; oldest_hole: the oldest
-- first seen, for the sweep that records the holes of a node gone quiet.
ALTER TABLE node_sequences
    ADD COLUMN IF NOT EXISTS holes jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS oldest_hole timestamptz;
