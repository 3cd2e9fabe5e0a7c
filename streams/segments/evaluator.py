"""Segment membership of a profile, and the change events between two memberships."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cel

from streams.profiles.model import Profile, ms_to_datetime
from streams.segments.definitions import SegmentDefinition, minimal_paths

ENTERED = "entered"
EXITED = "exited"


@dataclass(frozen=True, slots=True)
class Evaluation:
    members: frozenset[str]
    # Segment name -> error text, for expressions that failed on this profile.
    errors: dict[str, str]


@dataclass(frozen=True, slots=True)
class SegmentChange:
    profile_id: str
    segment: str
    change: str  # ENTERED | EXITED
    sequence: int
    occurred_at: int
    cause_event_id: str

    def to_record(self) -> dict[str, Any]:
        """Exactly the fields of the segment-changes topic's value."""
        return {
            "profile_id": self.profile_id,
            "segment": self.segment,
            "change": self.change,
            "sequence": self.sequence,
            "occurred_at": self.occurred_at,
            "cause_event_id": self.cause_event_id,
        }


def evaluate(definitions: Sequence[SegmentDefinition], profile: Profile, now_ms: int) -> Evaluation:
    """Which segments ``profile`` is in at ``now_ms``.

    An expression that fails for this profile makes it a non-member and is reported in
    ``errors``: one odd profile must never stop the worker.
    """
    if not definitions:
        return Evaluation(frozenset(), {})
    paths = _view_paths(tuple(definitions))
    # One context for all expressions: converting the view into CEL values is the
    # expensive part, executing a compiled program against it is cheap.
    context = cel.Context({"profile": profile.cel_view(paths), "now": ms_to_datetime(now_ms)})
    members = []
    errors: dict[str, str] = {}
    for definition in definitions:
        try:
            result = definition.program.execute(context)
        except Exception as exc:
            errors[definition.name] = f"{type(exc).__name__}: {exc}"
            continue
        if result is True:
            members.append(definition.name)
        elif result is not False:
            errors[definition.name] = f"expression gave {type(result).__name__}, not bool"
    return Evaluation(frozenset(members), errors)


@functools.lru_cache(maxsize=16)
def _view_paths(definitions: tuple[SegmentDefinition, ...]) -> frozenset[str]:
    """The profile paths any of ``definitions`` reads; computed once per rule set."""
    return minimal_paths(p for d in definitions for p in d.paths)


def diff(
    profile_id: str,
    before: Iterable[str],
    after: Iterable[str],
    *,
    last_sequence: int,
    occurred_at: int,
    cause_event_id: str,
) -> tuple[SegmentChange, ...]:
    """Changes from ``before`` to ``after``, numbered from ``last_sequence + 1``.

    Deterministic order, so replays number identically: exits before entries, each by
    segment name.
    """
    old, new = frozenset(before), frozenset(after)
    ordered = [(s, EXITED) for s in sorted(old - new)] + [(s, ENTERED) for s in sorted(new - old)]
    return tuple(
        SegmentChange(profile_id, segment, change, last_sequence + i, occurred_at, cause_event_id)
        for i, (segment, change) in enumerate(ordered, start=1)
    )
