"""Dead letters are bounded per node: a box sending endless distinct junk fills its own
overflow count, not the county's database, and other boxes keep their own rows."""

from __future__ import annotations

import psycopg

from cloud.ingest.dead_letters import Cause, DeadLetter, write_dead_letters
from cloud.snapshots import sha256_hex
from protocols.topics import events_topic

FLOODER, OTHER = "qx-dl-flood", "qx-dl-other"


def junk(node_id: str, i: int, cause: Cause = Cause.INVALID) -> DeadLetter:
    return DeadLetter(events_topic(node_id), b"{junk %d" % i, "$", "not valid JSON", cause)


def rows(url: str, node_id: str) -> list[tuple[str, str, int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (topic, sha256, deliveries, cause)
            for topic, sha256, deliveries, cause in conn.execute(
                "SELECT topic, sha256, deliveries, cause FROM ingest_dead_letters "
                "WHERE node_id = %s ORDER BY id",
                (node_id,),
            ).fetchall()
        ]


def test_a_node_past_its_rows_is_counted_on_overflow_rows_and_others_are_not(
    cloud_db: str,
) -> None:
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        write_dead_letters(conn, [junk(FLOODER, i) for i in range(8)], per_node=10)
        # Past the limit in one batch: two more fit, the rest overflow, by cause.
        write_dead_letters(
            conn,
            [junk(FLOODER, i) for i in range(8, 30)]
            + [junk(FLOODER, i, Cause.TOO_OLD) for i in range(30, 33)]
            + [junk(OTHER, i) for i in range(3)],
            per_node=10,
        )
        # A message it has a row for still counts there; a new one overflows.
        write_dead_letters(conn, [junk(FLOODER, 0), junk(FLOODER, 99)], per_node=10)
    flooder = rows(cloud_db, FLOODER)
    described = [r for r in flooder if not r[1].startswith("overflow")]
    overflow = {r[3]: r for r in flooder if r[1].startswith("overflow")}
    assert len(described) == 10
    assert [r[2] for r in described if r[1] == sha256_hex(junk(FLOODER, 0).payload)] == [2]
    assert overflow == {
        "invalid": (f"gw/v1/nodes/{FLOODER}/#", "overflow:invalid", 20 + 1, "invalid"),
        "too_old": (f"gw/v1/nodes/{FLOODER}/#", "overflow:too_old", 3, "too_old"),
    }
    assert len(rows(cloud_db, OTHER)) == 3
    with psycopg.connect(cloud_db) as conn:
        [[reason]] = conn.execute(
            "SELECT reason FROM ingest_dead_letters WHERE sha256 = 'overflow:invalid'"
        ).fetchall()
    assert reason.startswith("more than 10 distinct dead letters from this node")
    assert events_topic(FLOODER) in reason


def test_messages_of_no_node_are_not_limited(cloud_db: str) -> None:
    stray = [
        DeadLetter(f"stray/{i}", b"x", "topic", "not a channel ingest stores") for i in range(5)
    ]
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        write_dead_letters(conn, stray, per_node=1)
        count = conn.execute(
            "SELECT count(*) FROM ingest_dead_letters WHERE node_id IS NULL"
        ).fetchone()
    assert count == (5,)
