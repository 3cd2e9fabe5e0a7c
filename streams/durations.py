"""Durations as settings take them: ``7d``, ``12h``, ``30m``, ``250ms``, or sums (``1d12h``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: Any) -> Any:
    """``7d`` and the like to a timedelta; anything else is left for pydantic to judge."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    parts = list(_PART.finditer(text))
    if not parts or "".join(part.group(0) for part in parts) != text:
        raise ValueError(f"not a duration: {value!r} (e.g. 7d, 12h, 30m, 10s, 250ms)")
    return sum((int(part.group(1)) * _UNIT[part.group(2)] for part in parts), timedelta())


def format_duration(value: timedelta) -> str:
    milliseconds = int(value / timedelta(milliseconds=1))
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_UNIT[unit] / timedelta(milliseconds=1))
        if milliseconds and milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def milliseconds(value: timedelta) -> int:
    return int(value / timedelta(milliseconds=1))


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
