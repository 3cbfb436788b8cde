"""Closed sets of values on the wire. Adding a member is a change every receiver must know."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """Governance tier of a node or an org unit that has a centre."""

    COUNTY = "county"
    TOWN = "town"
    VILLAGE = "village"


class NodeStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class StateReason(StrEnum):
    """Why a node's state changed."""

    CONNECTED = "connected"
    CLEAN_SHUTDOWN = "clean_shutdown"
    CONNECTION_LOST = "connection_lost"  # the broker published the last will


class EventKind(StrEnum):
    INTRUSION = "intrusion"
    LINE_CROSSING = "line_crossing"
    LOITERING = "loitering"
    CROWD = "crowd"
    OBJECT = "object"
    MOTION = "motion"
    CAMERA_OFFLINE = "camera_offline"
    CAMERA_TAMPER = "camera_tamper"


class EventPhase(StrEnum):
    """Lifecycle of one situation: one start, updates at a bounded rate, one end."""

    START = "start"
    UPDATE = "update"
    END = "end"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class TamperReason(StrEnum):
    FROZEN = "frozen"  # the image stopped changing while the stream still runs
    COVERED = "covered"  # black, covered or blinded lens
    SCENE_CHANGE = "scene_change"  # the camera was turned or moved


class CrossingDirection(StrEnum):
    """Side change across a directed line A→B: `in` is from its left-hand side to its right."""

    IN = "in"
    OUT = "out"


class SnapshotVariant(StrEnum):
    FRAME = "frame"  # the full frame with the box drawn
    CROP = "crop"  # the object itself


class StreamStatus(StrEnum):
    CONNECTED = "connected"
    CONNECTING = "connecting"
    OFFLINE = "offline"
    DISABLED = "disabled"


class ConfigStatus(StrEnum):
    APPLIED = "applied"
    REJECTED = "rejected"


class CommandName(StrEnum):
    """Commands an edge node understands; others are answered with an error, not dropped."""

    SNAPSHOT = "snapshot"
    RESTART_CAMERA = "restart_camera"
    RELOAD_CONFIG = "reload_config"
    IDENTIFY = "identify"
    RECHECK_ZONE = "recheck_zone"


class ReplyStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class CaseState(StrEnum):
    """The closed loop: 受理 → 研判 → 分流 → 处置 → 督办 → 反馈 → 办结."""

    INTAKE = "intake"
    TRIAGE = "triage"
    DISPATCH = "dispatch"
    HANDLING = "handling"
    SUPERVISION = "supervision"
    FEEDBACK = "feedback"
    CLOSED = "closed"


class AlertKind(StrEnum):
    """What an alert is about: a detection kind, a fleet problem, or a worker's report."""

    INTRUSION = "intrusion"
    LINE_CROSSING = "line_crossing"
    LOITERING = "loitering"
    CROWD = "crowd"
    OBJECT = "object"
    MOTION = "motion"
    CAMERA_OFFLINE = "camera_offline"
    CAMERA_TAMPER = "camera_tamper"
    NODE_OFFLINE = "node_offline"
    NODE_FLAPPING = "node_flapping"
    DISK_FULL = "disk_full"

    OUTBOX_BACKLOG = "outbox_backlog"
    CONFIG_REJECTED = "config_rejected"
    CAMERA_UNREGISTERED = "camera_unregistered"
    NODE_SUSPENDED = "node_suspended"
    REPORT = "report"


class AlertMsgType(StrEnum):
    """CAP 1.2 msgType, lower-cased."""

    ALERT = "alert"
    UPDATE = "update"
    CANCEL = "cancel"


class CapUrgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class CapSeverity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class CapCertainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


CAP_SEVERITY_BY_SEVERITY = {
    Severity.LOW: CapSeverity.MINOR,
    Severity.MEDIUM: CapSeverity.MODERATE,
    Severity.HIGH: CapSeverity.SEVERE,
    Severity.CRITICAL: CapSeverity.EXTREME,
}
