"""Identifiers that appear as topic segments: node ids, camera ids, org codes, tokens.

Every identifier that is put into a topic is checked here, so no value can add a level,
a wildcard or a `$` system prefix to a topic and escape its subtree.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final
from uuid import UUID

from pydantic import UUID7, Field, WithJsonSchema

from protocols.errors import InvalidIdentifier

# First character alphanumeric: excludes "$" (broker system topics), "-" (our "no unit"
# placeholder in alert topics) and "_"; the rest may add "_" and "-". ASCII only, so
# no lookalike or control characters reach a topic, an ACL file or a log line.
_SEGMENT_BODY = r"[A-Za-z0-9][A-Za-z0-9_-]"

NODE_ID_MAX = 64
CAMERA_ID_MAX = 64
ORG_CODE_MAX = 32
TOKEN_MAX = 48

NODE_ID_PATTERN = rf"^{_SEGMENT_BODY}{{0,{NODE_ID_MAX - 1}}}$"
CAMERA_ID_PATTERN = rf"^{_SEGMENT_BODY}{{0,{CAMERA_ID_MAX - 1}}}$"
ORG_CODE_PATTERN = rf"^{_SEGMENT_BODY}{{0,{ORG_CODE_MAX - 1}}}$"
# Tokens name closed-but-extensible sets on the wire (command names, sensor quantities).
TOKEN_PATTERN = rf"^[a-z][a-z0-9_]{{0,{TOKEN_MAX - 1}}}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"

NodeId = Annotated[
    str,
    Field(
        pattern=NODE_ID_PATTERN,
        description="Edge node id; also its MQTT client id and username.",
        examples=["qx-tuxi-shuangfeng-01"],
    ),
]
CameraId = Annotated[
    str,
    Field(
        pattern=CAMERA_ID_PATTERN,
        description="Camera id, unique within its node.",
        examples=["cam01"],
    ),
]
OrgCode = Annotated[
    str,
    Field(
        pattern=ORG_CODE_PATTERN,
        description="Administrative code of an org unit (county, town, village or grid).",
        examples=["511725", "511725106", "511725106201", "511725106201003"],
    ),
]
Token = Annotated[
    str,
    Field(pattern=TOKEN_PATTERN, description="Lower-case machine name.", examples=["snapshot"]),
]
Sha256 = Annotated[
    str,
    Field(pattern=SHA256_PATTERN, description="SHA-256 as 64 lower-case hex digits."),
]


_UUID7_DESCRIPTION = "UUIDv7, made where the fact happened; time-ordered."

# pydantic's own UUID7 checks the version inside its validator core: a Python validator
# here cost 1.2 µs per id, twice per event on ingest's hottest path. The published schema
# keeps the standard "uuid" format, which every JSON Schema validator knows.
Uuid7 = Annotated[
    UUID7,
    Field(description=_UUID7_DESCRIPTION),
    WithJsonSchema({"type": "string", "format": "uuid", "description": _UUID7_DESCRIPTION}),
]

# An event's id is made when the event is observed: its time and `observed_at` lie within
# this of each other (a box makes both from one clock, milliseconds apart). Receivers rely
# on it to find a stored event by id in the one or two days its time names.
EVENT_ID_TIME_TOLERANCE: Final = timedelta(hours=1)


def uuid7_time(value: UUID) -> datetime:
    """When a UUIDv7 was made (its first 48 bits are Unix milliseconds)."""
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


def uuid7_at(when: datetime) -> UUID:
    """A new UUIDv7 made at `when` (a replayed or simulated observation's own time)."""
    millis = int(when.timestamp() * 1000)
    random = int.from_bytes(os.urandom(10))
    value = (millis << 80) | (0x7 << 76) | ((random >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (random & ((1 << 62) - 1))
    return UUID(int=value)


_CHECKS = {
    "node_id": re.compile(NODE_ID_PATTERN.removeprefix("^").removesuffix("$")),
    "camera_id": re.compile(CAMERA_ID_PATTERN.removeprefix("^").removesuffix("$")),
    "org_code": re.compile(ORG_CODE_PATTERN.removeprefix("^").removesuffix("$")),
    "token": re.compile(TOKEN_PATTERN.removeprefix("^").removesuffix("$")),
}
_LIMITS = {
    "node_id": NODE_ID_MAX,
    "camera_id": CAMERA_ID_MAX,
    "org_code": ORG_CODE_MAX,
    "token": TOKEN_MAX,
}


def check_identifier(kind: str, value: str) -> str:
    """Return `value` if it is a valid identifier of `kind`, else raise InvalidIdentifier."""
    if not isinstance(value, str):
        raise InvalidIdentifier(kind, repr(value), "must be a string")
    if not value:
        raise InvalidIdentifier(kind, value, "must not be empty")
    if len(value) > _LIMITS[kind]:
        raise InvalidIdentifier(kind, value, f"longer than {_LIMITS[kind]} characters")
    for forbidden in ("/", "+", "#"):
        if forbidden in value:
            raise InvalidIdentifier(kind, value, f"contains {forbidden!r}")
    # fullmatch, not match: Python's `$` also matches before a trailing newline.
    if _CHECKS[kind].fullmatch(value) is None:
        raise InvalidIdentifier(kind, value, f"must match {_CHECKS[kind].pattern}")
    return value


def check_node_id(value: str) -> str:
    return check_identifier("node_id", value)


def check_camera_id(value: str) -> str:
    return check_identifier("camera_id", value)


def check_org_code(value: str) -> str:
    return check_identifier("org_code", value)


def check_token(value: str) -> str:
    return check_identifier("token", value)
