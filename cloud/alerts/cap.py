"""Alerts as CAP 1.2 (OASIS Common Alerting Protocol) documents and an Atom feed of them,
so public warning systems and provincial platforms can take them as they are."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from protocols.alerts import Alert

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"

CATEGORY = {
    "intrusion": "Security",
    "line_crossing": "Security",
    "loitering": "Security",
    "object": "Security",
    "crowd": "Safety",
    "motion": "Security",
    "camera_offline": "Infra",
    "camera_tamper": "Infra",
    "node_offline": "Infra",
    "node_flapping": "Infra",
    "disk_full": "Infra",
    "outbox_backlog": "Infra",
    "config_rejected": "Infra",
    "camera_unregistered": "Infra",
    "report": "Safety",
}


def cap_time(at: datetime) -> str:
    """CAP's dateTime: seconds, and an explicit offset (no "Z", no fractions)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def sender(county: str) -> str:
    return f"gridwatch@{county}"


def _cap(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _atom(tag: str) -> str:
    return f"{{{ATOM_NS}}}{tag}"


def _add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def cap_polygon(geometry: Mapping[str, Any] | None) -> str | None:
    """GeoJSON (lon, lat) → CAP's "lat,lon lat,lon ..." ring (closed, four points or more)."""
    if not geometry or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        return None
    rings = geometry["coordinates"] if geometry["type"] == "Polygon" else geometry["coordinates"][0]
    ring = rings[0]
    if len(ring) < 4:
        return None
    return " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring)


def cap_document(
    alert: Alert,
    *,
    references_sent: Mapping[UUID, datetime],
    area_name: str,
    geometry: Mapping[str, Any] | None,
    case_url: str | None,
) -> bytes:
    """One alert as a CAP 1.2 document, with a Chinese and an English `info`."""
    ET.register_namespace("", CAP_NS)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    q = _cap
    _add(root, q("identifier"), str(alert.alert_id))
    _add(root, q("sender"), sender(alert.org.county))
    _add(root, q("sent"), cap_time(alert.sent_at))
    _add(root, q("status"), "Actual")
    _add(root, q("msgType"), alert.msg_type.value.capitalize())
    # For the county's own staff and systems, not a public broadcast.
    _add(root, q("scope"), "Restricted")
    _add(root, q("restriction"), f"gridwatch jurisdiction {alert.org.county}")
    if alert.references:
        _add(
            root,
            q("references"),
            " ".join(
                f"{sender(alert.org.county)},{ref},{cap_time(references_sent[ref])}"
                for ref in alert.references
                if ref in references_sent
            ),
        )
    polygon = cap_polygon(geometry)
    unit_code = alert.org.grid or alert.org.village or alert.org.town or alert.org.county
    for language, headline, description in (
        ("zh-CN", alert.headline_zh, alert.description_zh),
        ("en-US", alert.headline_en, alert.description_en),
    ):
        info = ET.SubElement(root, q("info"))
        _add(info, q("language"), language)
        _add(info, q("category"), CATEGORY.get(alert.kind.value, "Other"))
        _add(info, q("event"), alert.kind.value)
        _add(info, q("urgency"), alert.urgency.value)
        _add(info, q("severity"), alert.cap_severity.value)
        _add(info, q("certainty"), alert.certainty.value)
        _add(info, q("senderName"), "gridwatch")
        _add(info, q("headline"), headline)
        if description:
            _add(info, q("description"), description)
        if case_url:
            _add(info, q("web"), case_url)
        for name, value in (
            ("caseId", alert.case_id),
            ("caseState", alert.case_state.value if alert.case_state else None),
            ("nodeId", alert.node_id),
            ("cameraId", alert.camera_id),
            ("snapshotUrl", alert.snapshot_url),
        ):
            if value is not None:
                parameter = ET.SubElement(info, q("parameter"))
                _add(parameter, q("valueName"), name)
                _add(parameter, q("value"), str(value))
        area = ET.SubElement(info, q("area"))
        _add(area, q("areaDesc"), area_name)
        if polygon:
            _add(area, q("polygon"), polygon)
        geocode = ET.SubElement(area, q("geocode"))
        _add(geocode, q("valueName"), "CN-ADMIN-CODE")  # GB/T 2260 and its village extension
        _add(geocode, q("value"), unit_code)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def atom_feed(alerts: Iterable[Alert], *, feed_url: str, title: str, cap_url: Any) -> bytes:
    """An Atom feed whose entries link to each alert's CAP document (the feed style public
    alerting hubs read)."""
    ET.register_namespace("", ATOM_NS)
    q = _atom
    feed = ET.Element(q("feed"))
    items = list(alerts)
    _add(feed, q("id"), feed_url)
    _add(feed, q("title"), title)
    updated = max((a.sent_at for a in items), default=datetime.now(UTC))
    _add(feed, q("updated"), updated.astimezone(UTC).isoformat())
    link = ET.SubElement(feed, q("link"))
    link.set("rel", "self")
    link.set("href", feed_url)
    for alert in items:
        entry = ET.SubElement(feed, q("entry"))
        _add(entry, q("id"), f"urn:uuid:{alert.alert_id}")
        _add(entry, q("title"), alert.headline_zh)
        _add(entry, q("updated"), alert.sent_at.astimezone(UTC).isoformat())
        author = ET.SubElement(entry, q("author"))
        _add(author, q("name"), sender(alert.org.county))
        _add(entry, q("summary"), alert.headline_en)
        cap_link = ET.SubElement(entry, q("link"))
        cap_link.set("rel", "alternate")
        cap_link.set("type", "application/cap+xml")
        cap_link.set("href", cap_url(alert))
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document
