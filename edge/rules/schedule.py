"""Weekly time windows in the node's local time zone."""

from __future__ import annotations

from datetime import datetime, timedelta

from protocols.config import TimeWindow


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def is_active(schedule: list[TimeWindow], local: datetime) -> bool:
    """True when `local` falls in a window; an empty schedule is always active.

    A window whose end is before its start runs past midnight; its early-morning part
    belongs to the day it started on (a Friday 19:00-06:30 window covers Saturday 05:00).
    """
    if not schedule:
        return True
    now = local.hour * 60 + local.minute
    today = local.isoweekday()
    yesterday = (local - timedelta(days=1)).isoweekday()
    for window in schedule:
        start, end = _minutes(window.start), _minutes(window.end)
        if start < end:
            if today in window.days and start <= now < end:
                return True
        elif (today in window.days and now >= start) or (yesterday in window.days and now < end):
            return True
    return False
