"""The base of every wire model: frozen, unknown fields ignored, finite numbers, UTC times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)

# The payload schema version a receiver of the gw/v1 topics reads. Additive changes (a new
# optional field) keep it; anything else is a new topic version, gw/v2.
SCHEMA_VERSION: Final = 1

# How far in the future a timestamp may lie before a receiver refuses it (clock skew of
# a box whose RTC drifted or whose NTP has not synced yet). Overridable per decode call.
DEFAULT_MAX_FUTURE_SKEW_S = 300.0

# Validation context keys set by protocols.codec.decode.
CONTEXT_NOW = "now"
CONTEXT_MAX_FUTURE_SKEW_S = "max_future_skew_s"


class WireModel(BaseModel):
    """Any object on the wire, nested or top level."""

    model_config = ConfigDict(
        extra="ignore",  # an edge may be upgraded before the cloud
        frozen=True,
        allow_inf_nan=False,
        use_enum_values=False,
        str_max_length=4096,
    )


class Payload(WireModel):
    """A top-level MQTT message."""

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION,
        description="Payload schema version; receivers refuse any other value.",
    )


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-23:59 is in the year 10000 in UTC
        raise ValueError("lies outside the years a time can have in UTC") from None


# How a receiver's refusal of a timestamp from the future ends: such a message is refused
# only for now (sent again once its time has come, it is taken).
IN_THE_FUTURE = "s in the future"


def _utc_not_in_future(value: datetime, info: ValidationInfo) -> datetime:
    value = _to_utc(value)
    context: dict[str, Any] = info.context or {}
    now = context.get(CONTEXT_NOW)
    if now is None:
        return value  # built in code, not received: nothing to compare with
    skew_s = float(context.get(CONTEXT_MAX_FUTURE_SKEW_S, DEFAULT_MAX_FUTURE_SKEW_S))
    if value > now + timedelta(seconds=skew_s):
        raise ValueError(f"timestamp {value.isoformat()} is more than {skew_s:g} {IN_THE_FUTURE}")
    return value


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    Field(
        description="Timezone-aware timestamp, normalised to UTC.",
        examples=["2026-11-25T08:30:00Z"],
    ),
]
"""An aware timestamp normalised to UTC; naive timestamps are refused."""

PastDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_utc_not_in_future),
    Field(
        description="Timezone-aware UTC timestamp; receivers refuse one too far in the future.",
        examples=["2026-11-25T08:30:00Z"],
    ),
]
"""A timestamp of something that happened: must not lie beyond the allowed clock skew."""


def _json_whole_number(value: object) -> object:
    if isinstance(value, bool | str):
        raise ValueError("must be a whole number (a JSON number), not true, false or text")
    return value


JSON_WHOLE = BeforeValidator(_json_whole_number)
Integer = Annotated[int, JSON_WHOLE]
"""A whole number as JSON Schema has it: 3 or 3.0, never `true` or "3" (which pydantic reads
as 1 and 3). Numbers (`strict=True` floats) and flags (`strict=True` bools) need no type of
their own. Bounds inside a union or a list go before JSON_WHOLE, or the schema loses them:
`Annotated[int, Field(ge=1), JSON_WHOLE] | None`."""


def utc_now() -> datetime:
    return datetime.now(UTC)
