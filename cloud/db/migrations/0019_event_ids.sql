-- One event id, one event (issue 19), by a unique key rather than a search. `events` is
-- partitioned by observed_at, so its keys hold the time, and a copy of an event sent again
-- with another time would not collide with it. Every stored event claims its id here first;
-- a claim that conflicts is a copy. Only copies young enough to be stored at all need
-- finding (older events are dead letters, CLOUD_INGEST_MAX_EVENT_AGE_DAYS), so ingest drops
-- claims past that age: the table stays a month of ids whatever the events' retention.
-- observed_at: where the claimed event lies in `events`, to compare a copy with it.
CREATE TABLE IF NOT EXISTS event_ids (
    event_id uuid PRIMARY KEY,
    observed_at timestamptz NOT NULL
);
-- The events of the last 60 days claim their ids (the first copy, where there were two).
INSERT INTO event_ids (event_id, observed_at)
SELECT event_id, min(observed_at) FROM events
WHERE observed_at > now() - interval '60 days'
GROUP BY event_id
ON CONFLICT DO NOTHING;
