"""When the clock alone can change a time-based segment's result, worked out from its text.

A time-based expression written in the documented idiom reads the clock only in terms
``now - profile.<timestamp> <op> duration("<d>")`` (or, for a time ahead,
``profile.<timestamp> - now <op> duration("<d>")``). Each such term flips at one instant,
the timestamp plus (or minus) the duration, so for a given profile the expression's result
can change without a change to the profile only at those instants. Knowing the next one lets the
evaluator skip the expression at every event before it (its conversion into CEL values is
most of a segment evaluation's cost), and tells a timer when the profile is due.

Expressions that use ``now`` any other way (as a timestamp of its own, inside arithmetic,
in parentheses, in a comprehension) are not analysed: they run at every change of the
profile, as before.

Paths whose value is computed at the clock (``profile.stays.current``, see
:data:`~streams.segments.view.CEL_CLOCK_PATHS`) change at their attribute's own instants:
each stay's start and end. An expression reading one gets a term for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from streams.expressions import mask_string_literals
from streams.profiles.model import Profile
from streams.segments.view import CEL_CLOCK_PATHS, CEL_TIMESTAMPS

# `now` the variable: not a member (`x.now`) nor part of a longer name.
_NOW = re.compile(r"(?<![.\w])now(?!\w)")
_PATH = r"profile\s*\.\s*([A-Za-z_]\w*)(?:\s*\.\s*([A-Za-z_]\w*))?"
_COMPARED = r"\s*(<=|>=|<|>)\s*duration\s*\(\s*\"([^\"\\]*)\"\s*\)"
_TERM = re.compile(r"(?<![.\w])now\s*-\s*" + _PATH + _COMPARED)
# `profile.<timestamp> - now <op> duration`: how long until a time ahead (a stay's start).
_AHEAD = re.compile(r"(?<![.\w])" + _PATH + r"\s*-\s*(?P<now>now)(?!\w)" + _COMPARED)
# What may not stand next to a term: an operator that binds tighter than the comparison
# (or, before it, a comparison: they group from the left) would make `now - t` or the
# duration an operand of something else.
_BINDS_BEFORE = frozenset("+-*/%!=<>")
_BINDS_AFTER = frozenset("+-*/%.[(")
_IN = re.compile(r"(?<![.\w])in$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_NANOSECONDS = {
    "h": 3_600_000_000_000,
    "m": 60_000_000_000,
    "s": 1_000_000_000,
    "ms": 1_000_000,
    "us": 1_000,
    "µs": 1_000,
    "ns": 1,
}


@dataclass(frozen=True, slots=True)
class ClockTerm:
    """``now - <attribute> <op> duration``: flips when the clock passes attribute + duration."""

    attribute: str  # the Profile attribute, epoch ms or None ("never", the epoch in CEL)
    duration_ms: int
    flips_after_ms: tuple[int, ...] = (0, 1)
    """When after that edge the result may flip: at it (``>=``, ``<``), a millisecond later
    (``>``, ``<=``), or either, when the comparison is not known (a clock path's edges).
    Known, a segment is rechecked once per flip instead of twice."""


# Attribute of a clock path -> the instants at which the clock changes its paths' values.
CLOCK_EDGES: dict[str, Callable[[Any], Iterable[int]]] = {
    "stays": lambda stays: (edge for stay in stays for edge in (stay.starts_at, stay.ends_at)),
}


def with_clock_paths(
    terms: tuple[ClockTerm, ...] | None, paths: Iterable[str]
) -> tuple[ClockTerm, ...] | None:
    """``terms`` and a term for each clock path among ``paths`` (none added to ``None``:
    such an expression runs at every change anyway)."""
    if terms is None:
        return None
    attributes = sorted({CEL_CLOCK_PATHS[p] for p in paths if p in CEL_CLOCK_PATHS})
    return (*terms, *(ClockTerm(attribute, 0) for attribute in attributes))


def clock_terms(expression: str) -> tuple[ClockTerm, ...] | None:
    """The clock terms of ``expression``, or ``None`` when it reads ``now`` otherwise.

    An expression without ``now`` has none: the clock cannot change its result.
    """
    masked = mask_string_literals(expression)
    uses = [m.start() for m in _NOW.finditer(masked)]
    # Matched on the real text, for the duration's literal; `masked` found the uses.
    ahead = {m.start("now"): m for m in _AHEAD.finditer(expression)}
    terms: list[ClockTerm] = []
    for start in uses:
        match, sign = _TERM.match(expression, start), 1
        if match is None and start in ahead:
            # `t - now < d` flips when now passes t - d.
            match, sign = ahead[start], -1
        if match is None or not _stands_alone(expression, match.start(), match.end()):
            return None
        head, member = match.group(1, 2)
        operator, literal = match.groups()[-2:]
        path = head if member is None else f"{head}.{member}"
        attribute = CEL_TIMESTAMPS.get(path) or CEL_CLOCK_PATHS.get(path)
        duration_ms = _duration_ms(literal)
        if attribute is None or duration_ms is None:
            return None
        terms.append(ClockTerm(attribute, sign * duration_ms, (_flip_lag(operator, sign),)))
    return tuple(terms)


def _flip_lag(operator: str, sign: int) -> int:
    """How long after its edge a term's comparison flips, in milliseconds: ``now - t >= d``
    turns true at t + d itself, ``now - t > d`` a millisecond later; in the time-ahead form
    (``t - now``, sign -1) the clock runs the other way."""
    return 0 if (operator in (">=", "<")) == (sign == 1) else 1


def next_change(terms: Iterable[ClockTerm], profile: Profile, now_ms: int) -> int | None:
    """The first instant after ``now_ms`` at which one of ``terms`` may flip for ``profile``;
    ``None`` when none can any more.

    A term flips at its edge, timestamp + duration, or a millisecond later
    (:attr:`ClockTerm.flips_after_ms`).
    """
    due: int | None = None
    for term in terms:
        value = getattr(profile, term.attribute)
        edges = CLOCK_EDGES.get(term.attribute)
        for base in (value or 0,) if edges is None else edges(value):
            edge = base + term.duration_ms
            for instant in (edge + lag for lag in term.flips_after_ms):
                if instant > now_ms and (due is None or instant < due):
                    due = instant
    return due


def _stands_alone(text: str, start: int, end: int) -> bool:
    before = text[:start].rstrip()
    after = text[end:].lstrip()
    if before and (before[-1] in _BINDS_BEFORE or _IN.search(before)):
        return False
    return not (after and after[0] in _BINDS_AFTER)


def _duration_ms(literal: str) -> int | None:
    """A CEL duration literal in whole milliseconds; ``None`` for what is not one."""
    sign = -1 if literal.startswith("-") else 1
    text = literal.lstrip("+-")
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        return None
    nanoseconds = sum((Fraction(p.group(1)) * _NANOSECONDS[p.group(2)] for p in parts), Fraction())
    milliseconds = nanoseconds / 1_000_000
    if milliseconds.denominator != 1:
        return None
    return sign * int(milliseconds)
