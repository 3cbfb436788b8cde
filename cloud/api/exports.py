"""CSV exports as a spreadsheet opens them safely: a cell that a spreadsheet would run as a
formula (`=`, `+`, `-`, `@`, a tab or carriage return first) is written as text, and a line
break inside a cell is always quoted (RFC 4180 line ends: a lone carriage return left
unquoted split a row in two). Anyone who can report a case chooses its title."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def writer(out: TextIO) -> Any:
    return csv.writer(out, lineterminator="\r\n")


def cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value  # shown as typed, never run
    return value


def row(values: Mapping[str, object], columns: Sequence[str]) -> list[object]:
    return [cell(values[c]) for c in columns]
