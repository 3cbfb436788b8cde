"""The county / town / village / grid rules, as pure functions on administrative codes.

A unit's code extends its parent's, and siblings' codes have one length (as China's
administrative codes do; grids extend their village's code). So "inside a unit" is a
prefix test, which the database answers from an index, and the tier above a unit is
found without a walk up the tree.
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    COUNTY = "county"
    TOWN = "town"
    VILLAGE = "village"
    GRID = "grid"


LEVELS = (Level.COUNTY, Level.TOWN, Level.VILLAGE, Level.GRID)
PARENT_LEVEL = {Level.TOWN: Level.COUNTY, Level.VILLAGE: Level.TOWN, Level.GRID: Level.VILLAGE}


def is_within(code: str, unit_code: str) -> bool:
    """Whether `code` is `unit_code` itself or lies below it."""
    return code.startswith(unit_code)


def escalation_level(level: Level) -> Level:
    """Where a late case goes: grid and village → town → county; the county stays (its
    supervision level rises instead)."""
    if level in (Level.GRID, Level.VILLAGE):
        return Level.TOWN
    return Level.COUNTY


def level_rank(level: Level) -> int:
    return LEVELS.index(level)
