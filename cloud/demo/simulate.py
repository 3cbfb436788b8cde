"""`gridwatch simulate`: a county's worth of boxes for capacity planning, through the real
broker, as the protocols define them.

N virtual boxes (default 400 village boxes and 40 town boxes) with M cameras each publish,
in compressed time, what a county's day holds: quiet nights and busy mornings, markets busier
than lanes, a crowd gathering at a town's market, a camera going offline and coming back, a
town losing its link for a while and replaying what its boxes kept, heartbeats and sensor
readings. With `--database-url` it first registers its county (units, boxes, cameras) and at
the end reports what the service did with it: events stored against published, sequence gaps,
publish-to-stored latency, cases opened and escalated, publish-to-alert latency.

Simulated time ends at the real present (receivers refuse times in the future), so a run of
`--hours` at `--speed` starts `--hours` back and catches up.
"""

from __future__ import annotations

import functools
import heapq
import logging
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
import typer
from paho.mqtt.enums import CallbackAPIVersion
from uuid6 import uuid7

from protocols import DetectionEvent, NodeHealth, Telemetry, encode
from protocols.enums import CrossingDirection, EventKind, EventPhase, Severity, StreamStatus
from protocols.events import Reading
from protocols.health import CameraHealth, OutboxHealth
from protocols.identifiers import uuid7_at
from protocols.topics import events_topic, health_topic, telemetry_topic

logger = logging.getLogger(__name__)
NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK: taken, but nobody subscribes: send it again
app = typer.Typer(
    help="A county's worth of boxes, for capacity planning.", invoke_without_command=True
)

COUNTY = "511725"
TIMEZONE = ZoneInfo("Asia/Shanghai")  # the county's clock: its busy hours are local
HEARTBEAT_S = 30.0
# Situations per camera per hour, by hour of day (a village lane: quiet at night).
HOURLY = (
    [0.2] * 6 + [1.5, 3.0, 3.0, 2.0, 1.5, 1.5, 1.0, 1.0, 1.5, 2.0, 3.0, 3.0, 2.0, 1.0] + [0.5] * 4
)
MARKET_FACTOR = 4.0  # a market camera in the morning
# What each kind of situation says beyond its kind (each kind's required fields).
KIND_FIELDS: dict[EventKind, dict[str, Any]] = {
    EventKind.INTRUSION: {"label": "person", "score": 0.8},
    EventKind.LOITERING: {"label": "person", "dwell_s": 180.0},
    EventKind.LINE_CROSSING: {"label": "car", "direction": CrossingDirection.IN},
    EventKind.OBJECT: {"label": "car", "score": 0.7},
}


@dataclass
class Box:
    node_id: str
    unit_code: str
    town: str
    cameras: list[tuple[str, str]]  # (camera id, grid)
    market: bool = False
    seq: int = 0
    backlog: list[tuple[str, bytes, UUID | None]] = field(default_factory=list)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass
class County:
    towns: list[str]
    villages: dict[str, str]  # village -> town
    grids: dict[str, str]  # grid -> village
    boxes: list[Box]


def make_county(
    towns: int, villages_per_town: int, grids_per_village: int, cameras: int, grids_total: int = 0
) -> County:
    """Codes as real ones nest (a village's code extends its town's); one box per village
    and one per town; each box's cameras watch its own grids (a town's, its market).
    `grids_total` spreads that many grids over the villages instead (some get one more)."""
    town_codes = [f"{COUNTY}{100 + t:03d}" for t in range(towns)]
    villages: dict[str, str] = {}
    grids: dict[str, str] = {}
    boxes: list[Box] = []
    village_count = towns * villages_per_town
    for t, town in enumerate(town_codes):
        for v in range(villages_per_town):
            village = f"{town}{200 + v:03d}"
            villages[village] = town
            index = t * villages_per_town + v
            count = (
                grids_total // village_count + (index < grids_total % village_count)
                if grids_total
                else grids_per_village
            )
            own = [f"{village}{1 + g:03d}" for g in range(max(1, count))]
            grids.update({g: village for g in own})
            cams = [(f"cam{c + 1:02d}", own[c % len(own)]) for c in range(cameras)]
            boxes.append(Box(f"sim-{village}", village, town, cams))
        town_cams = [(f"cam{c + 1:02d}", town) for c in range(cameras)]
        boxes.append(Box(f"sim-{town}", town, town, town_cams, market=True))
    return County(town_codes, villages, grids, boxes)


def register(url: str, county: County) -> None:
    """The county's tree, boxes and cameras, written as an import would (idempotent)."""
    with psycopg.connect(url) as conn, conn.transaction():
        rows: list[tuple[str, str | None, str, str]] = [(COUNTY, None, "county", "渠县")]
        rows += [(t, COUNTY, "town", f"镇{i}") for i, t in enumerate(county.towns)]
        rows += [(v, t, "village", f"村{v[-3:]}") for v, t in county.villages.items()]
        rows += [(g, v, "grid", f"网格{g[-6:]}") for g, v in county.grids.items()]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO org_units (code, parent_code, level, name) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (code) DO NOTHING",
                rows,
            )
            cur.executemany(
                "INSERT INTO nodes (node_id, unit_code, tier) VALUES (%s, %s, %s) "
                "ON CONFLICT (node_id) DO NOTHING",
                [(b.node_id, b.unit_code, "town" if b.market else "village") for b in county.boxes],
            )
            cur.executemany(
                "INSERT INTO cameras (node_id, camera_id, unit_code) VALUES (%s, %s, %s) "
                "ON CONFLICT (node_id, camera_id) DO UPDATE SET unit_code = excluded.unit_code",
                [(b.node_id, c, g) for b in county.boxes for c, g in b.cameras],
            )


# ---- the day's happenings, as a schedule of (simulated time, what) --------------------


@dataclass(order=True)
class Happening:
    at: float  # simulated seconds from the start
    order: int
    what: str = field(compare=False)
    box: Box = field(compare=False)
    data: dict[str, Any] = field(compare=False, default_factory=dict)


def plan(county: County, start: datetime, seconds: float, rng: random.Random) -> list[Happening]:
    out: list[Happening] = []
    counter = 0

    def add(at: float, what: str, box: Box, **data: Any) -> None:
        nonlocal counter
        if 0 <= at < seconds:
            counter += 1
            out.append(Happening(at, counter, what, box, data))

    for box in county.boxes:
        phase = rng.uniform(0, HEARTBEAT_S)
        for k in range(int((seconds - phase) // HEARTBEAT_S) + 1):
            add(phase + k * HEARTBEAT_S, "health", box)
        for camera, _ in box.cameras:
            t = 0.0
            while t < seconds:
                hour = (start + timedelta(seconds=t)).astimezone(TIMEZONE).hour
                rate = HOURLY[hour] * (MARKET_FACTOR if box.market and 7 <= hour < 11 else 1.0)
                t += rng.expovariate(rate / 3600)
                add(t, "situation", box, camera=camera, length=rng.uniform(8, 90))
    # Incidents: a crowd at the first town's market, a camera away a while, a town's link down.
    market = next(b for b in county.boxes if b.market)
    add(seconds * 0.2, "situation", market, camera=market.cameras[0][0], length=300, crowd=True)
    lost = county.boxes[0]
    add(seconds * 0.1, "camera_offline", lost, camera=lost.cameras[-1][0], length=seconds * 0.1)
    add(seconds * 0.3, "link_down", market, town=market.town)
    add(seconds * 0.3 + min(3600.0, seconds * 0.3), "link_up", market, town=market.town)
    telemetry = county.boxes[:: max(1, len(county.boxes) // 20)]  # a few river gauges
    for box in telemetry:
        for k in range(int(seconds // 300)):
            add(k * 300.0 + 7, "telemetry", box)
    heapq.heapify(out)
    return out


class Publisher:
    """A few MQTT connections publishing on the boxes' behalf (QoS 1, window of acks), as
    a box would: what the broker took for nobody (PUBACK 0x10, ingest not subscribed, e.g.
    just after a broker restart) is sent again, and what the link dropped goes again when
    it returns (paho resends it on reconnect)."""

    def __init__(
        self, broker: str, username: str | None, password: str | None, connections: int
    ) -> None:
        host, _, port = broker.removeprefix("mqtt://").partition(":")
        self._lock = threading.Lock()
        self._waiting: dict[tuple[int, int], tuple[str, bytes]] = {}  # (client, mid)
        self._again: list[tuple[str, bytes]] = []  # taken for nobody: to send again
        self._early: dict[tuple[int, int], int] = {}  # answers that came before `publish` noted
        self._acked = threading.Event()
        self.unheard = 0
        self.clients = []
        for i in range(connections):
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"simulate-{i}-{uuid7().hex[-6:]}",
                protocol=mqtt.MQTTv5,
            )
            if username:
                client.username_pw_set(username, password)
            client.max_inflight_messages_set(1000)
            client.on_publish = functools.partial(self._on_publish, i)
            client.connect(host, int(port or 1883))
            client.loop_start()
            self.clients.append(client)
        self.n = 0

    def _on_publish(
        self, index: int, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        code = int(getattr(reason, "value", 0))
        with self._lock:
            message = self._waiting.pop((index, mid), None)
            if message is None:
                self._early[(index, mid)] = code  # before `publish` noted it
            else:
                self._answered(message, code)
        self._acked.set()

    def _answered(self, message: tuple[str, bytes], code: int) -> None:
        if code == NO_MATCHING_SUBSCRIBERS:
            self._again.append(message)
            self.unheard += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.n += 1
        index = self.n % len(self.clients)
        # Not under our lock: paho calls on_publish holding its own, which `publish` takes.
        info = self.clients[index].publish(topic, payload, qos=1)
        with self._lock:
            code = self._early.pop((index, info.mid), None)
            if code is None:
                self._waiting[(index, info.mid)] = (topic, payload)
            else:
                self._answered((topic, payload), code)

    def close(self, timeout_s: float = 120.0) -> int:
        """Wait for every PUBACK, sending again what nobody took, at most `timeout_s`;
        returns how many messages could not be delivered (never raises for them)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                again, self._again = self._again, []
                waiting = len(self._waiting)
            if again:
                self._acked.wait(1.0)  # nobody subscribed a moment ago: give ingest a second
                for topic, payload in again:
                    self.publish(topic, payload)
            elif not waiting:
                break
            self._acked.clear()
            self._acked.wait(1.0)
        with self._lock:
            undelivered = len(self._waiting) + len(self._again)
        for client in self.clients:
            client.disconnect()
            client.loop_stop()
        return undelivered


@dataclass
class Tally:
    published: int = 0
    replayed: int = 0
    heartbeats: int = 0
    sent_at: dict[UUID, float] = field(default_factory=dict)  # event id -> wall time sent
    unheard: int = 0  # taken by the broker for nobody (0x10), and sent again
    undelivered: int = 0  # never taken by the broker within the time allowed


def _event(
    box: Box,
    camera: str,
    at: datetime,
    kind: EventKind,
    phase: EventPhase,
    thread: UUID | None,
    **fields: Any,
) -> DetectionEvent:
    event_id = uuid7_at(at)  # made when observed, as a box makes it
    return DetectionEvent(
        event_id=event_id,
        thread_id=thread or event_id,
        seq=box.next_seq(),
        node_id=box.node_id,
        camera_id=camera,
        observed_at=at,
        kind=kind,
        phase=phase,
        **fields,
    )


def window_start(hours: float, speed: float, from_hour: int | None) -> datetime:
    """Where simulated time starts: by default so that it ends at the real present; with
    `from_hour`, at that local hour of the latest day whose whole window lies in the past
    (receivers refuse times in the future)."""
    now = datetime.now(UTC)
    if from_hour is None:
        return now + timedelta(seconds=hours * 3600 / speed - hours * 3600)
    day = now.astimezone(TIMEZONE).replace(hour=from_hour, minute=0, second=0, microsecond=0)
    while day + timedelta(hours=hours) > now:
        day -= timedelta(days=1)
    return day.astimezone(UTC)


def run(
    county: County,
    publisher: Publisher,
    hours: float,
    speed: float,
    seed: int,
    from_hour: int | None = None,
) -> Tally:
    rng = random.Random(seed)  # noqa: S311 - a reproducible load, not a secret
    seconds = hours * 3600
    sim_start = window_start(hours, speed, from_hour)
    wall_start = time.time()
    schedule = plan(county, sim_start, seconds, rng)
    tally = Tally()
    towns_down: set[str] = set()

    def send(box: Box, topic: str, payload: bytes, event_id: UUID | None) -> None:
        if box.town in towns_down:
            box.backlog.append((topic, payload, event_id))  # kept on the box, in order
            return
        publisher.publish(topic, payload)
        tally.published += 1
        if event_id is not None:
            tally.sent_at[event_id] = time.time()

    while schedule:
        item = heapq.heappop(schedule)
        delay = wall_start + item.at / speed - time.time()
        if delay > 0:
            time.sleep(delay)  # pacing compressed time, not synchronising
        at = sim_start + timedelta(seconds=item.at)
        box = item.box
        if item.what == "health":
            health = NodeHealth(
                node_id=box.node_id,
                sent_at=at,
                uptime_s=item.at + 3600,
                cpu_percent=rng.uniform(15, 60),
                memory_used_bytes=700_000_000,
                memory_total_bytes=2_000_000_000,
                disk_used_bytes=9_000_000_000,
                disk_total_bytes=32_000_000_000,
                cameras=[
                    CameraHealth(
                        camera_id=c,
                        status=StreamStatus.CONNECTED,
                        input_fps=25.0,
                        analysed_fps=5.0,
                        reconnects=0,
                    )
                    for c, _ in box.cameras
                ],
                outbox=OutboxHealth(depth=len(box.backlog), bytes=0, budget_bytes=1 << 30),
                agent_version="sim",
            )
            send(box, health_topic(box.node_id), encode(health), None)
            tally.heartbeats += 1
        elif item.what == "telemetry":
            reading = Telemetry(
                telemetry_id=uuid7(),
                node_id=box.node_id,
                sensor_id="river01",
                observed_at=at,
                readings=[
                    Reading(quantity="water_level", value=round(rng.uniform(2.1, 2.9), 2), unit="m")
                ],
            )
            send(box, telemetry_topic(box.node_id), encode(reading), None)
        elif item.what in ("situation", "camera_offline"):
            camera = item.data["camera"]
            if item.what == "camera_offline":
                kind, extra, severity = EventKind.CAMERA_OFFLINE, {}, Severity.MEDIUM
            elif item.data.get("crowd"):
                kind, extra, severity = (
                    EventKind.CROWD,
                    {"count": 35, "label": "person"},
                    Severity.HIGH,
                )
            else:
                kind = rng.choice(
                    [
                        EventKind.INTRUSION,
                        EventKind.INTRUSION,
                        EventKind.LOITERING,
                        EventKind.LINE_CROSSING,
                        EventKind.OBJECT,
                    ]
                )
                extra = KIND_FIELDS[kind]
                severity = rng.choice(
                    [Severity.LOW, Severity.MEDIUM, Severity.MEDIUM, Severity.HIGH]
                )
            start = _event(
                box, camera, at, kind, EventPhase.START, None, severity=severity, **extra
            )
            send(box, events_topic(box.node_id), encode(start), start.event_id)
            heapq.heappush(
                schedule,
                Happening(
                    item.at + item.data["length"],
                    item.order,
                    "end",
                    box,
                    {"start": start, "extra": extra},
                ),
            )
        elif item.what == "end":
            first: DetectionEvent = item.data["start"]
            end = _event(
                box,
                first.camera_id,
                at,
                first.kind,
                EventPhase.END,
                first.event_id,
                severity=first.severity,
                **item.data["extra"],
            )
            send(box, events_topic(box.node_id), encode(end), end.event_id)
        elif item.what == "link_down":
            towns_down.add(item.data["town"])
            logger.warning("town %s lost its link", item.data["town"])
        elif item.what == "link_up":
            towns_down.discard(item.data["town"])
            for b in county.boxes:
                if b.town == item.data["town"]:
                    for topic, payload, event_id in b.backlog:
                        send(b, topic, payload, event_id)
                        tally.replayed += 1
                    b.backlog.clear()
            logger.warning("town %s is back: replayed its boxes' backlog", item.data["town"])
    towns_down.clear()  # a run that ends during an outage still delivers: the link returns
    for b in county.boxes:
        for topic, payload, event_id in b.backlog:
            send(b, topic, payload, event_id)
            tally.replayed += 1
        b.backlog.clear()
    tally.undelivered = publisher.close()
    tally.unheard = publisher.unheard
    return tally


def report(url: str, county: County, tally: Tally, wait_s: float) -> dict[str, Any]:
    """What the service did with the run (waits up to `wait_s` for ingest to catch up)."""
    ids = list(tally.sent_at)
    deadline = time.monotonic() + wait_s
    with psycopg.connect(url) as conn:
        stored = 0
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM events WHERE event_id = ANY(%s)", (ids,)
            ).fetchone()
            stored = int(row[0]) if row else 0
            if stored >= len(ids):
                break
            time.sleep(1.0)  # waiting for ingest to drain, bounded by wait_s
        rows = conn.execute(
            "SELECT event_id, extract(epoch FROM stored_at) FROM events WHERE event_id = ANY(%s)",
            (ids,),
        ).fetchall()
        latency = sorted(float(s) - tally.sent_at[e] for e, s in rows if e in tally.sent_at)
        nodes = [b.node_id for b in county.boxes]
        gaps = conn.execute(
            "SELECT count(*) FROM seq_gaps WHERE node_id = ANY(%s) AND closed_at IS NULL", (nodes,)
        ).fetchone()
        cases = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE escalations > 0), "
            "array_agg(first_event_id) FROM cases WHERE node_id = ANY(%s) AND source = 'camera'",
            (nodes,),
        ).fetchone()
        alert_rows = conn.execute(
            "SELECT c.first_event_id, extract(epoch FROM a.sent_at) FROM alerts a "
            "JOIN cases c ON c.case_id = a.case_id "
            "WHERE a.msg_type = 'alert' AND c.node_id = ANY(%s)",
            (nodes,),
        ).fetchall()
    alert_latency = sorted(float(s) - tally.sent_at[e] for e, s in alert_rows if e in tally.sent_at)

    def p(values: list[float], q: float) -> float | None:
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    return {
        "events_published": len(ids),
        "events_stored": len(rows),
        "replayed": tally.replayed,
        "heartbeats": tally.heartbeats,
        "open_gaps": int(gaps[0]) if gaps else 0,
        "stored_latency_p50_s": p(latency, 0.5),
        "stored_latency_p99_s": p(latency, 0.99),
        "cases_opened": int(cases[0]) if cases else 0,
        "cases_escalated": int(cases[1]) if cases else 0,
        "alert_latency_p50_s": p(alert_latency, 0.5),
        "alert_latency_p99_s": p(alert_latency, 0.99),
        "alert_latency_mean_s": statistics.fmean(alert_latency) if alert_latency else None,
    }


@app.callback()
def simulate(
    broker_url: Annotated[
        str, typer.Option(help="mqtt://host:port of the broker ingest reads.")
    ] = "mqtt://127.0.0.1:1883",
    username: Annotated[
        str | None, typer.Option(help="A broker account that may publish for nodes.")
    ] = None,
    password: Annotated[str | None, typer.Option()] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Register the county here and report what was stored.")
    ] = None,
    towns: Annotated[int, typer.Option(min=1)] = 40,
    villages: Annotated[int, typer.Option(min=1, help="Villages per town.")] = 10,
    grids: Annotated[int, typer.Option(min=1, help="Grids per village.")] = 2,
    cameras: Annotated[int, typer.Option(min=1, help="Cameras per box.")] = 4,
    hours: Annotated[float, typer.Option(min=0.01, help="Simulated hours.")] = 1.0,
    speed: Annotated[float, typer.Option(min=1, help="Simulated seconds per real second.")] = 10.0,
    connections: Annotated[int, typer.Option(min=1, max=64)] = 4,
    seed: Annotated[int, typer.Option()] = 1,
    from_hour: Annotated[
        int | None,
        typer.Option(
            min=0, max=23, help="Simulate from this local hour of a past day (7: the morning peak)."
        ),
    ] = None,
    wait_s: Annotated[float, typer.Option(help="How long the report waits for ingest.")] = 120.0,
    out: Annotated[Path | None, typer.Option(help="Also write the report here (JSON).")] = None,
) -> None:
    """Run the county and print what the service did with it."""
    import json

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    county = make_county(towns, villages, grids, cameras)
    typer.echo(
        f"{len(county.boxes)} boxes, {sum(len(b.cameras) for b in county.boxes)} cameras, "
        f"{len(county.grids)} grids; {hours:g} h at {speed:g}x = {hours * 3600 / speed:.0f} s"
    )
    if database_url:
        register(database_url, county)
    tally = run(
        county,
        Publisher(broker_url, username, password, connections),
        hours,
        speed,
        seed,
        from_hour,
    )
    typer.echo(
        f"published {tally.published} messages ({len(tally.sent_at)} events, "
        f"{tally.heartbeats} heartbeats, {tally.replayed} replayed after the outage); "
        f"{tally.unheard} taken by the broker for nobody (no subscriber) and sent again; "
        f"{tally.undelivered} not delivered"
    )
    if database_url:
        result = report(database_url, county, tally, wait_s)
        for key, value in result.items():
            typer.echo(f"  {key:24} {value if not isinstance(value, float) else round(value, 3)}")
        if out:
            out.write_text(json.dumps(result, indent=2))
        if result["events_stored"] != result["events_published"]:
            raise typer.Exit(1)
