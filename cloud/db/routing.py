"""Events → cases, set-based, inside ingest's transaction (an event is stored and routed
together, once, however often it is delivered).

The batch's new events are in a temp table: `events_staging` when the whole batch was new,
else `events_inserted` (what its ON CONFLICT insert kept). A situation's start
opens a case for the camera's unit, or merges into the open case of the same camera and
kind; the case starts at the tier its rule names, with deadlines from the rules. A
camera-health situation that ends closes its work order by itself.

A box's word about its cameras goes no further than its own unit: an event of a camera the
registry does not give that box opens its case at the box's unit and never above, one
case per kind for all such cameras of the box, and the box gets one technician's work order
(a box of a village must not raise county cases, or hundreds of village ones, by naming
cameras it does not have). A node the registry does not know opens nothing.
"""

from __future__ import annotations

import psycopg

from cloud.cases.rules import CAMERA_UNREGISTERED, CaseRules
from cloud.db.alerts import LOCK_SQL
from protocols.enums import Severity

# One work order per box naming its strange cameras; a technician's, not an emergency.
STRAY_SEVERITY = Severity.MEDIUM
# The most cameras one work order names (each in its history): enough to see what a box
# is doing, not a place a box can write without end.
STRAY_CAMERAS_NAMED = 64

# Cases of the batch in merge-key order: the lock order every ingest process shares.
ROUTE_SQL = """
WITH root AS (
    SELECT code FROM org_units WHERE level = 'county' ORDER BY code LIMIT 1
), started AS (
    -- Registered: the camera's unit, read now (ingest's cache may be older); unregistered:
    -- the box's unit, which ingest staged as the event's unit.
    SELECT e.*, c.node_id IS NOT NULL AS registered,
           CASE WHEN c.node_id IS NULL THEN u.code ELSE coalesce(cu.code, root.code) END
               AS route_unit
    FROM {new_events} e
    CROSS JOIN root
    LEFT JOIN cameras c ON c.node_id = e.node_id AND c.camera_id = e.camera_id
    LEFT JOIN org_units cu ON cu.code = c.unit_code
    LEFT JOIN org_units u ON u.code = e.unit_code
    WHERE e.phase = 'start'
), candidates AS (
    -- A box's unregistered cameras share one case per kind: naming 300 made-up cameras
    -- opens one case, not 300.
    SELECT CASE WHEN e.registered THEN e.node_id || '/' || e.camera_id || '/' || e.kind
                ELSE e.node_id || '/?/' || e.kind END AS merge_key,
           e.node_id, e.camera_id, e.kind AS category, e.severity, e.event_id, e.thread_id,
           e.observed_at, e.route_unit AS unit_code, e.registered,
           r.source, r.start_level, r.ack_s, r.resolve_s,
           array_position(ARRAY['low', 'medium', 'high', 'critical'], e.severity) AS rank
    FROM started e
    JOIN case_rules r ON r.category = e.kind AND r.severity = e.severity AND r.opens_case
    WHERE e.route_unit IS NOT NULL
), cooling AS (
    -- Dismissed as a false alarm within the cooldown of the rules in force: the same camera
    -- and kind open nothing meanwhile (the case came straight back 7 s after a dismissal).
    SELECT DISTINCT ON (c.merge_key) c.merge_key, c.case_id
    FROM cases c
    WHERE c.false_alarm AND c.merge_key IN (SELECT merge_key FROM candidates)
      AND c.closed_at > now() - make_interval(secs => coalesce(
          (SELECT (s.rules->>'false_alarm_cooldown_s')::int FROM case_rule_sets s
           ORDER BY s.version DESC LIMIT 1), %(cooldown_s)s))
    ORDER BY c.merge_key, c.closed_at DESC
), suppressed AS (
    -- Counted on the dismissed case; the events themselves are stored as any other.
    UPDATE cases c SET suppressed_events = c.suppressed_events + n.events
    FROM (SELECT k.case_id, count(*) AS events FROM candidates i JOIN cooling k USING (merge_key)
          GROUP BY k.case_id) n
    WHERE c.case_id = n.case_id
), incoming AS (
    SELECT * FROM candidates i WHERE NOT EXISTS (SELECT 1 FROM cooling k
                                                 WHERE k.merge_key = i.merge_key)
), worst AS (
    SELECT DISTINCT ON (merge_key) merge_key, node_id, camera_id, category, severity,
           unit_code, registered, source, start_level, ack_s, resolve_s,
           first_value(event_id) OVER w AS first_event_id,
           min(observed_at) OVER w AS first_at, max(observed_at) OVER w AS last_at,
           count(*) OVER w AS n
    FROM incoming
    WINDOW w AS (PARTITION BY merge_key ORDER BY observed_at
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    ORDER BY merge_key, rank DESC, observed_at
), upserted AS (
    INSERT INTO cases (case_id, source, category, severity, state, title, unit_code,
                       responsible_unit_code, node_id, camera_id, merge_key, first_event_id,
                       event_count, first_event_at, last_event_at, opened_at, ack_due_at,
                       resolve_due_at)
    SELECT gen_random_uuid(), w.source, w.category, w.severity, 'intake',
           w.category || ' · ' || w.node_id
               || CASE WHEN w.registered THEN '/' || w.camera_id ELSE ' (unregistered cameras)' END,
           w.unit_code,
           CASE WHEN NOT w.registered THEN w.unit_code
                ELSE coalesce((SELECT a.code FROM org_units a
                               WHERE a.level = w.start_level AND starts_with(w.unit_code, a.code)),
                              w.unit_code) END,
           w.node_id, w.camera_id, w.merge_key, w.first_event_id, w.n, w.first_at, w.last_at,
           now(), now() + make_interval(secs => w.ack_s), now() + make_interval(secs => w.resolve_s)
    FROM worst w
    ORDER BY w.merge_key
    ON CONFLICT (merge_key) WHERE state <> 'closed' AND merge_key IS NOT NULL DO UPDATE SET
        event_count = cases.event_count + excluded.event_count,
        last_event_at = greatest(cases.last_event_at, excluded.last_event_at),
        severity = CASE WHEN array_position(ARRAY['low', 'medium', 'high', 'critical'],
                                            excluded.severity)
                           > array_position(ARRAY['low', 'medium', 'high', 'critical'],
                                            cases.severity)
                        THEN excluded.severity ELSE cases.severity END,
        updated_at = now(),
        version = cases.version + 1
    RETURNING case_id, merge_key, state, (xmax = 0) AS opened, event_count
), threads AS (
    INSERT INTO case_threads (thread_id, case_id, first_event_id, observed_at)
    SELECT DISTINCT ON (i.thread_id, u.case_id) i.thread_id, u.case_id, i.event_id, i.observed_at
    FROM incoming i JOIN upserted u USING (merge_key)
    ORDER BY i.thread_id, u.case_id, i.observed_at
    ON CONFLICT DO NOTHING
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT u.case_id, now(), 'system', CASE WHEN u.opened THEN 'open' ELSE 'merge' END,
           CASE WHEN u.opened THEN NULL ELSE u.state END, u.state,
           jsonb_build_object('events', u.event_count)
    FROM upserted u
), stray_new AS (
    -- Per box, its unregistered cameras not yet named on its open work order, up to
    -- STRAY_CAMERAS_NAMED on one order (a box could make up cameras without end).
    SELECT s.node_id, s.route_unit AS unit_code,
           (array_agg(DISTINCT s.camera_id ORDER BY s.camera_id))
               [1:%(stray_named)s - coalesce(max(n.named), 0)] AS names
    FROM started s
    LEFT JOIN cases o ON o.merge_key = s.node_id || '/-/' || %(stray)s AND o.state <> 'closed'
    LEFT JOIN LATERAL (SELECT count(*) AS named
                       FROM case_history h, jsonb_array_elements(h.detail->'cameras') x
                       WHERE h.case_id = o.case_id) n ON true
    WHERE NOT s.registered AND s.route_unit IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM case_history h
                      WHERE h.case_id = o.case_id AND h.detail->'cameras' ? s.camera_id)
    GROUP BY 1, 2
), strays AS (
    SELECT node_id, unit_code, array_to_string(names, ', ') AS cameras,
           to_jsonb(names) AS camera_list
    FROM stray_new WHERE cardinality(names) > 0
), stray_orders AS (
    INSERT INTO cases (case_id, source, category, severity, state, title, description,
                       unit_code, responsible_unit_code, node_id, merge_key, event_count,
                       first_event_at, last_event_at, opened_at, ack_due_at, resolve_due_at)
    SELECT gen_random_uuid(), 'fleet', r.category, r.severity, 'intake',
           left(r.category || ' · ' || s.node_id || ' (' || s.cameras || ')', 200),
           left('events from cameras not registered to this box: ' || s.cameras
                || '. Register them (gridwatch provision) or remove them from the box''s '
                || 'config.', 2000),
           s.unit_code,
           coalesce((SELECT a.code FROM org_units a
                     WHERE a.level = r.start_level AND starts_with(s.unit_code, a.code)),
                    s.unit_code),
           s.node_id, s.node_id || '/-/' || r.category, 1, now(), now(), now(),
           now() + make_interval(secs => r.ack_s), now() + make_interval(secs => r.resolve_s)
    FROM strays s
    JOIN case_rules r ON r.category = %(stray)s AND r.severity = %(stray_severity)s
                     AND r.opens_case
    ORDER BY s.node_id
    -- Cameras that turn up later are added to the order, each once.
    ON CONFLICT (merge_key) WHERE state <> 'closed' AND merge_key IS NOT NULL DO UPDATE SET
        description = left(cases.description || ' Since also: '
                           || (SELECT s.cameras FROM strays s WHERE s.node_id = cases.node_id)
                           || '.', 2000),
        event_count = cases.event_count + 1,
        last_event_at = now(),
        updated_at = now(),
        version = cases.version + 1
    RETURNING case_id, node_id, state, (xmax = 0) AS opened
), stray_history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT o.case_id, now(), 'system', CASE WHEN o.opened THEN 'open' ELSE 'merge' END,
           CASE WHEN o.opened THEN NULL ELSE o.state END, o.state,
           jsonb_build_object('reason', 'events from cameras not registered to this box: '
                                        || s.cameras, 'cameras', s.camera_list)
    FROM stray_orders o JOIN strays s USING (node_id)
)
SELECT count(*) FILTER (WHERE opened), count(*) FILTER (WHERE NOT opened) FROM upserted
"""

# Work orders that close themselves: the targets CTE (case_id, state) picks them, the rest
# closes them and writes their history, with %(reason)s kept.
CLOSE_SQL = """
WITH targets AS ({targets}
), closed AS (
    UPDATE cases c SET state = 'closed', closed_at = now(), resolved_at = now(),
                       close_reason = %(reason)s, updated_at = now(), version = c.version + 1
    FROM targets WHERE c.case_id = targets.case_id
    RETURNING c.case_id, targets.state AS from_state
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT case_id, now(), 'system', 'auto_close', from_state, 'closed',
           jsonb_build_object('reason', %(reason)s::text)
    FROM closed
)
SELECT count(*) FROM closed
"""

# A camera that is back (its offline or tamper situation ended) closes its work order,
# when the ended situation is the case's latest one and its own box says so.
AUTO_CLOSE_SQL = CLOSE_SQL.replace(
    "{targets}",
    """
    SELECT DISTINCT c.case_id, c.state
    FROM {new_events} e
    JOIN case_threads t ON t.thread_id = e.thread_id
    JOIN cases c ON c.case_id = t.case_id
    WHERE e.phase = 'end' AND c.source = 'fleet' AND c.state <> 'closed'
      AND c.node_id = e.node_id  -- a thread id is public (alerts carry it): only its box ends it
      AND t.observed_at = (SELECT max(observed_at) FROM case_threads l
                           WHERE l.case_id = c.case_id)
    ORDER BY c.case_id""",
)


# Where a batch's new events may be, and each statement for each.
NEW_EVENT_TABLES = ("events_staging", "events_inserted")
_ROUTE = {t: ROUTE_SQL.replace("{new_events}", t) for t in NEW_EVENT_TABLES}
_AUTO_CLOSE = {t: AUTO_CLOSE_SQL.replace("{new_events}", t) for t in NEW_EVENT_TABLES}


def route_events(
    conn: psycopg.Connection, new_events: str = "events_inserted"
) -> tuple[int, int, int]:
    """(cases opened, cases merged into, work orders closed) for the batch's new events,
    in the temp table `new_events` (one of NEW_EVENT_TABLES)."""
    conn.execute(LOCK_SQL)  # before case rows: the order every alert-raising path shares
    row = conn.execute(
        _ROUTE[new_events],
        {
            "stray": CAMERA_UNREGISTERED,
            "stray_severity": STRAY_SEVERITY.value,
            "stray_named": STRAY_CAMERAS_NAMED,
            # Rules set before the cooldown existed do not name it: the default then.
            "cooldown_s": CaseRules.model_fields["false_alarm_cooldown_s"].default,
        },
    ).fetchone()
    opened, merged = (row[0], row[1]) if row else (0, 0)
    closed_row = conn.execute(_AUTO_CLOSE[new_events], {"reason": "camera back"}).fetchone()
    return opened, merged, closed_row[0] if closed_row else 0
