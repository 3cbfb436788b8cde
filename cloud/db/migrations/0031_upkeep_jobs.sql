-- The background jobs that keep the time series (TimescaleDB's policies, or the plain path's
-- partitions and retention) as gridwatch last saw them: when each last succeeded and failed,
-- and when gridwatch ran one itself because its scheduler did not (cloud.db.upkeep).
CREATE TABLE IF NOT EXISTS upkeep_jobs (
    job text PRIMARY KEY,
    job_id integer,
    every interval NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_success timestamptz,
    last_failure timestamptz,
    last_error text,
    scheduler_failures bigint NOT NULL DEFAULT 0,
    fallback_at timestamptz,
    fallback_runs bigint NOT NULL DEFAULT 0
);
