"""A box's messages beyond its share, parked raw in the database and taken up later.

All boxes' messages reach ingest through one queue, first come first served: a box sending
thousands of valid events a second put its backlog in front of every other box's. Ingest
now gives each box a share (`Share`: a burst, then a steady rate, in message units where a
large message counts for more), and what a box sends beyond it goes here, undecoded, in the
batch's transaction, and is acknowledged with the batch: the boxes that keep to their share
go first. A box's day (CLOUD_INGEST_NODE_DAILY_UNITS) is counted the same way, across
processes: what comes beyond it waits here for the next day. Parked messages are taken
up, each box's oldest first and as its share and day allow, whenever ingest has nothing
waiting and once a second besides, in their own transactions, screened in the quarantine
as redeliveries are (none of them was ever decoded). Each ingest process keeps its own
shares: two processes give a box twice the rate. A box parks at most
CLOUD_INGEST_NODE_DEFERRED_MAX_MB; beyond that its messages are dead letters (cause
`flood`), counted on its overflow rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

import orjson
import psycopg

from cloud.ingest.buckets import Buckets
from cloud.ingest.dead_letters import Cause, DeadLetter
from cloud.ingest.subscriber import Received
from cloud.metrics import INGEST_PARKED
from protocols.catalog import CHANNELS
from protocols.codec import check_unparsed
from protocols.errors import InvalidPayload, InvalidTopic
from protocols.topics import Channel, NodeTopic, parse_topic

# Channels a share applies to: a box's data. Reports saying how it is now are throttled
# instead (cloud.ingest.throttle); snapshots are bounded by their own quotas.
SHARED = frozenset({Channel.EVENTS, Channel.TELEMETRY, Channel.RESPONSES})
UNIT_BYTES = 2048  # a message counts one unit, and one more for each 2 KiB of payload
# Telemetry counts by what it stores: a reading is a row, and about 45 bytes (64 of them,
# 2.9 KB, counted 2 units by bytes, let a box store 960,000 rows in its burst).
TELEMETRY_UNIT_BYTES = 64
TAKE_AT_ONCE = 500  # parked messages taken up in one transaction
UTC_ZONE = ZoneInfo("UTC")


def county_day(timezone: ZoneInfo) -> date:
    return datetime.now(timezone).date()


class Share:
    """Per box, a token bucket of `burst` units refilled at `rate` a second (0: no share),
    and `daily` units a county day (0: no limit): what a box's messages may take of ingest
    and of the county's disk, whether they come now or are taken up later.

    The day's units are counted in the database by every ingest process (`record_day`, in
    the batch's transaction); each process reads the total back with each batch it stores
    for the box, so together they let a box past its day by at most a batch each."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        daily: int = 0,
        timezone: ZoneInfo = UTC_ZONE,
        today: Callable[[ZoneInfo], date] = county_day,
    ) -> None:
        self.rate = rate
        self.buckets: Buckets[str] = Buckets(rate, burst, clock)
        self.daily = daily
        self.timezone = timezone
        self.today = today
        self.day = today(timezone)
        self.day_used: dict[str, float] = {}  # units of today, as last read plus taken since
        self.reached: set[str] = set()  # boxes known to have reached today's units

    def split(
        self, messages: list[Received]
    ) -> tuple[list[Received], list[Received], dict[str, float]]:
        """(the messages to store now, those beyond their box's share or day, the units
        each box's messages to store use). Each box's room is read once a batch: this runs
        for every message ingest takes."""
        if self.rate <= 0 and self.daily <= 0:
            return messages, [], {}
        within: list[Received] = []
        beyond: list[Received] = []
        left: dict[str, float] = {}  # each box's room, read once
        used: dict[str, float] = {}
        for message in messages:
            node = node_of(message.topic)
            if node is None:
                within.append(message)
                continue
            if node not in left:
                left[node], used[node] = self._room(node), 0.0
            cost = units(message)
            if left[node] - used[node] >= cost:
                used[node] += cost
                within.append(message)
            else:
                beyond.append(message)
        self._spend(used)
        return within, beyond, {n: u for n, u in used.items() if u}

    def room(self, node: str) -> int:
        """Units the box may use now."""
        return max(0, int(min(self._room(node), TAKE_AT_ONCE)))

    def charge(self, messages: list[Received]) -> dict[str, float]:
        """Count messages taken up against their boxes' shares and days (a large one may
        overdraw: its box then waits the longer); returns the units by box."""
        used = units_by_box(messages)
        for node in used:
            self._room(node)  # brings the box's bucket up to now
        self._spend(used)
        return used

    def recorded(self, totals: dict[str, int]) -> list[str]:
        """The day's units of boxes as the database counts them now (all processes');
        returns the boxes that reached their day with it (each once a day)."""
        if self._new_day():
            return []
        self.day_used.update(totals)
        if self.daily <= 0:
            return []
        reached = [n for n, t in totals.items() if t >= self.daily and n not in self.reached]
        self.reached.update(reached)
        return reached

    def over_the_day(self, node: str) -> bool:
        return self.daily > 0 and self.day_used.get(node, 0.0) >= self.daily

    def _room(self, node: str) -> float:
        room = self.buckets.level(node) if self.rate > 0 else float("inf")
        if self.daily > 0:
            self._new_day()
            room = min(room, self.daily - self.day_used.get(node, 0.0))
        return room

    def _spend(self, used: dict[str, float]) -> None:
        for node, amount in used.items():
            if self.rate > 0:
                self.buckets.spend(node, amount)
            if self.daily > 0:
                self.day_used[node] = self.day_used.get(node, 0.0) + amount

    def _new_day(self) -> bool:
        today = self.today(self.timezone)
        if today == self.day:
            return False
        self.day, self.day_used, self.reached = today, {}, set()
        return True


def record_day(conn: psycopg.Connection, used: dict[str, float], day: date) -> dict[str, int]:
    """Add a batch's units to its boxes' day, in the batch's transaction; returns each box's
    total for the day (every process's batches)."""
    nodes = sorted(used)
    rows = conn.execute(
        "INSERT INTO ingest_node_days AS d (node_id, day, units) "
        "SELECT v.node_id, %s, v.units FROM unnest(%s::text[], %s::int8[]) AS v(node_id, units) "
        "ORDER BY 1 ON CONFLICT (node_id, day) DO UPDATE SET units = d.units + excluded.units "
        "RETURNING node_id, units",
        (day, nodes, [round(used[n]) for n in nodes]),
    ).fetchall()
    return dict(rows)


def refused_anyway(message: Received) -> bool:
    """Whether the protocol's checks that need no parsing (size, depth, values) refuse the
    message: such a one is refused now, not parked whole to be refused later (16 KiB events
    full of `[]` filled a box's parking in seconds and held others up by 15 s)."""
    try:
        parts = parse_topic(message.topic)
    except InvalidTopic:
        return True
    if not isinstance(parts, NodeTopic):
        return True
    spec = CHANNELS[parts.channel]
    if spec.payload is None:
        return len(message.payload) > spec.max_bytes
    try:
        check_unparsed(spec.payload, message.payload, max_bytes=spec.max_bytes)
    except InvalidPayload:
        return True
    # Not JSON at all: refused now, a dead letter that counts towards suspending its box,
    # instead of parked (1.23M junk messages, 41 minutes to take up). Parsing is the cheap
    # part of decoding (about 1 µs a KB); validating is what waits for the box's share.
    try:
        orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        return True
    return False


def units(message: Received) -> int:
    per = TELEMETRY_UNIT_BYTES if message.topic.endswith("/telemetry") else UNIT_BYTES
    return 1 + len(message.payload) // per + message.extra_bytes // UNIT_BYTES


def units_by_box(messages: Sequence[Received]) -> dict[str, float]:
    """The units of the messages on shared channels, by box."""
    used: dict[str, float] = {}
    for message in messages:
        node = node_of(message.topic)
        if node is not None:
            used[node] = used.get(node, 0.0) + units(message)
    return used


def node_of(topic: str) -> str | None:
    """The box a shared channel's topic belongs to; None for anything else."""
    try:
        return _NODE_OF[topic]
    except KeyError:
        pass
    try:
        parts = parse_topic(topic)
    except InvalidTopic:
        return None
    node = parts.node_id if isinstance(parts, NodeTopic) and parts.channel in SHARED else None
    if len(_NODE_OF) < _CACHED_TOPICS:  # a box's events and telemetry come on a few topics
        _NODE_OF[topic] = node
    return node


_CACHED_TOPICS = 100_000
_NODE_OF: dict[str, str | None] = {}


def park(
    conn: psycopg.Connection, messages: Sequence[Received], *, max_bytes: int
) -> list[DeadLetter]:
    """Park the messages, in the caller's transaction; those past their box's limit are
    returned as dead letters instead."""
    by_node: dict[str, int] = {}
    for message in messages:
        node = node_of(message.topic)
        assert node is not None  # only shared channels are split off
        by_node[node] = by_node.get(node, 0) + len(message.payload)
    nodes = sorted(by_node)
    conn.execute(
        "INSERT INTO ingest_deferred_nodes (node_id) SELECT unnest(%s::text[]) "
        "ORDER BY 1 ON CONFLICT DO NOTHING",
        (nodes,),
    )
    parked: dict[str, int] = dict(
        conn.execute(
            "SELECT node_id, bytes FROM ingest_deferred_nodes WHERE node_id = ANY(%s) "
            "ORDER BY node_id FOR UPDATE",
            (nodes,),
        ).fetchall()
    )
    kept: list[Received] = []
    dead: list[DeadLetter] = []
    added: dict[str, int] = dict.fromkeys(nodes, 0)
    for message in messages:
        node = node_of(message.topic)
        assert node is not None
        size = len(message.payload)
        if parked[node] + added[node] + size > max_bytes:
            dead.append(
                DeadLetter(
                    message.topic,
                    message.payload,
                    "$",
                    f"its box sent more than its share and has {max_bytes // 2**20} MB "
                    "waiting already",
                    Cause.FLOOD,
                )
            )
            continue
        added[node] += size
        kept.append(message)
    if kept:
        INGEST_PARKED.inc(len(kept))
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY ingest_deferred (node_id, topic, payload, received_at) FROM STDIN"
            ) as copy,
        ):
            for message in kept:
                copy.write_row(
                    (node_of(message.topic), message.topic, message.payload, message.received_at)
                )
        conn.execute(
            "UPDATE ingest_deferred_nodes n SET bytes = n.bytes + v.added "
            "FROM unnest(%s::text[], %s::int8[]) AS v(node_id, added) WHERE n.node_id = v.node_id",
            (nodes, [added[n] for n in nodes]),
        )
    return dead


def prune_days(conn: psycopg.Connection, *, keep_days: int = 31) -> int:
    """Forget the boxes' day counts older than `keep_days` (only today's limits anything)."""
    cur = conn.execute(
        "DELETE FROM ingest_node_days WHERE day < current_date - %s::integer", (keep_days,)
    )
    return cur.rowcount


def parked_nodes(conn: psycopg.Connection) -> list[str]:
    """The boxes with messages parked."""
    return [
        node
        for (node,) in conn.execute(
            "SELECT node_id FROM ingest_deferred_nodes WHERE bytes > 0 ORDER BY node_id"
        ).fetchall()
    ]


def take(conn: psycopg.Connection, room: dict[str, int]) -> list[Received]:
    """Each box's oldest parked messages, as many as its `room`, removed in the caller's
    transaction (put back if it rolls back), as redeliveries: the quarantine screens them
    before they are decoded. Ordered as the (node_id, id) index is: ordered by id alone,
    the planner walked the primary key past every other box's rows (498,046 a box, up to
    1.1 s a take with 2.45M parked from five boxes)."""
    nodes = sorted(n for n, most in room.items() if most > 0)
    if not nodes:
        return []
    rows: list[tuple[str, str, bytes, datetime]] = conn.execute(
        "DELETE FROM ingest_deferred WHERE id IN ("
        "  SELECT d.id FROM unnest(%s::text[], %s::int4[]) AS v(node_id, most) "
        "  CROSS JOIN LATERAL (SELECT id FROM ingest_deferred p WHERE p.node_id = v.node_id "
        "                      ORDER BY p.node_id, p.id LIMIT v.most FOR UPDATE SKIP LOCKED) d) "
        "RETURNING node_id, topic, payload, received_at",
        (nodes, [room[n] for n in nodes]),
    ).fetchall()
    if not rows:
        return []
    taken: dict[str, int] = {}
    for node, _, payload, _ in rows:
        taken[node] = taken.get(node, 0) + len(payload)
    nodes = sorted(taken)
    conn.execute(  # in one order, as `park` locks them: processes never deadlock
        "SELECT 1 FROM ingest_deferred_nodes WHERE node_id = ANY(%s) ORDER BY node_id FOR UPDATE",
        (nodes,),
    )
    conn.execute(
        "UPDATE ingest_deferred_nodes n SET bytes = greatest(n.bytes - v.taken, 0) "
        "FROM unnest(%s::text[], %s::int8[]) AS v(node_id, taken) WHERE n.node_id = v.node_id",
        (nodes, [taken[n] for n in nodes]),
    )
    received = [
        Received(0, 1, topic, bytes(payload), received_at, duplicate=True)
        for _, topic, payload, received_at in sorted(rows, key=lambda row: row[3])
    ]
    return received
