"""An alert row as the wire `Alert`: the org path, CAP's urgency, severity and certainty, and
short headlines in Chinese and English from templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocols.alerts import Alert, OrgPath
from protocols.enums import (
    CAP_SEVERITY_BY_SEVERITY,
    AlertKind,
    AlertMsgType,
    CapCertainty,
    CapUrgency,
    Severity,
)

Units = Mapping[str, tuple[str, str, str | None]]  # code → (level, name, parent_code)

KIND_TEXT: dict[str, tuple[str, str]] = {
    "intrusion": ("人员或车辆闯入", "intrusion"),
    "line_crossing": ("越线", "line crossing"),
    "loitering": ("人员徘徊", "loitering"),
    "crowd": ("人员聚集", "crowd"),
    "object": ("发现目标", "object seen"),
    "motion": ("画面异动", "motion"),
    "camera_offline": ("摄像头离线", "camera offline"),
    "camera_tamper": ("摄像头遮挡或移位", "camera tampered"),
    "node_offline": ("边缘设备离线", "edge box offline"),
    "node_flapping": ("边缘设备频繁掉线", "edge box link flapping"),
    "disk_full": ("边缘设备磁盘将满", "edge box disk nearly full"),
    "outbox_backlog": ("边缘设备积压", "edge box backlog"),
    "config_rejected": ("边缘设备配置被拒", "edge box config rejected"),
    "camera_unregistered": ("边缘设备上报未登记摄像头", "edge box reports unregistered cameras"),
    "node_suspended": ("边缘设备异常发送，已暂停接入", "edge box suspended for what it sends"),
    "report": ("网格员上报", "grid worker's report"),
}
REASON_TEXT: dict[str, tuple[str, str]] = {
    "open": ("", ""),
    "acknowledge": ("（已受理）", " (acknowledged)"),
    "dispatch": ("（已分派处置）", " (dispatched)"),
    "escalate": ("（超时未受理，已上报）", " (late, escalated)"),
    "close": ("（已办结）", " (closed)"),
    "dismiss": ("（误报，已关闭）", " (false alarm, closed)"),
    "auto_close": ("（已恢复）", " (back to normal)"),
}
_KINDS = {kind.value for kind in AlertKind}
URGENCY = {
    Severity.CRITICAL: CapUrgency.IMMEDIATE,
    Severity.HIGH: CapUrgency.IMMEDIATE,
    Severity.MEDIUM: CapUrgency.EXPECTED,
    Severity.LOW: CapUrgency.FUTURE,
}


def org_path(unit_code: str, units: Units) -> OrgPath:
    """The unit's place in the tree, by walking up from it."""
    levels: dict[str, str] = {}
    code: str | None = unit_code
    while code is not None and code in units:
        level, _, parent = units[code]
        levels[level] = code
        code = parent
    if "county" not in levels:  # not in the tree (yet): the code stands for itself
        return OrgPath(county=unit_code)
    return OrgPath(
        county=levels["county"],
        town=levels.get("town"),
        village=levels.get("village"),
        grid=levels.get("grid"),
    )


def render_alert(row: Mapping[str, Any], units: Units, public_url: str) -> Alert:
    msg_type = AlertMsgType(row["msg_type"])
    severity = Severity(row["severity"])
    kind_zh, kind_en = KIND_TEXT.get(row["kind"], (row["kind"], row["kind"]))
    reason_zh, reason_en = REASON_TEXT.get(row["reason"], ("", ""))
    place = units.get(row["unit_code"], ("", row["unit_code"], None))[1]
    # A person's report is known by its title (camera and fleet cases by their kind).
    title_zh = title_en = ""
    if row.get("title"):
        title_zh, title_en = f"：{row['title']}", f": {row['title']}"
    responsible = units.get(row["responsible_unit_code"], ("", row["responsible_unit_code"], None))
    detail_zh = f"责任单位：{responsible[1]}" if row["reason"] == "escalate" else None
    detail_en = f"now with {responsible[1]}" if row["reason"] == "escalate" else None
    snapshot = None
    if row["event_id"] is not None and row["source"] == "camera":
        snapshot = f"{public_url}/api/v1/events/{row['event_id']}/snapshots/frame"
    return Alert(
        alert_id=row["alert_id"],
        sent_at=row["sent_at"],
        msg_type=msg_type,
        references=list(row["refs"] or []),
        kind=AlertKind(row["kind"]) if row["kind"] in _KINDS else AlertKind.REPORT,
        org=org_path(row["unit_code"], units),
        severity=severity,
        urgency=CapUrgency.PAST if msg_type is AlertMsgType.CANCEL else URGENCY[severity],
        cap_severity=CAP_SEVERITY_BY_SEVERITY[severity],
        # A person saw a report; a camera's detection is likely, until someone confirms it.
        certainty=CapCertainty.OBSERVED if row["source"] == "report" else CapCertainty.LIKELY,
        headline_zh=f"{place} {kind_zh}{reason_zh}{title_zh}"[:160],
        headline_en=f"{kind_en}{reason_en} at {place}{title_en}"[:160],
        description_zh=detail_zh,
        description_en=detail_en,
        case_id=row["case_id"],
        case_state=row["case_state"],
        event_id=row["event_id"],
        node_id=row["node_id"],
        camera_id=row["camera_id"],
        snapshot_url=snapshot,
    )
