"""Segment membership of a profile, and the change events between two memberships."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streams.events import ENTERED, EXITED, SegmentChange
from streams.expressions import cel
from streams.profiles.model import Profile
from streams.segments.clock import ClockTerm, next_change
from streams.segments.definitions import SegmentDefinition, cel_variables


@dataclass(frozen=True, slots=True)
class Evaluation:
    members: frozenset[str]
    # Segment name -> error text, for expressions that failed on this profile.
    errors: dict[str, str]
    # The profile's next recheck time (Profile.segment_recheck_at) under these definitions.
    recheck_at: int | None = None


def evaluate(
    definitions: Sequence[SegmentDefinition],
    profile: Profile,
    now_ms: int,
    previous: Profile | None = None,
) -> Evaluation:
    """Which segments ``profile`` is in at ``now_ms``.

    ``previous`` is the profile before the change that made ``profile``, its ``segments``
    evaluated under these same definitions (``segment_rules`` is their :func:`fingerprint`).
    An expression then keeps its result unless an attribute it reads changed or, for one
    reading the clock, the clock reached ``previous.segment_recheck_at``; only the others
    run: converting profile values into CEL values costs far more than executing. A clock
    that steps back (another worker's) keeps the later result.

    An expression that fails for this profile makes it a non-member and is reported in
    ``errors``: one odd profile must never stop the worker.
    """
    members: list[str] = []
    due: Sequence[SegmentDefinition] = definitions
    read, terms = _inputs(tuple(definitions))
    if previous is not None:
        recheck_at = previous.segment_recheck_at
        clock_due = recheck_at is not None and now_ms >= recheck_at
        changed = _changed(read, previous, profile)
        due = []
        for definition in definitions:
            clock = definition.clock
            if (
                clock is None
                or (clock and clock_due)
                or not changed.isdisjoint(definition.sources)
                or _changed_at_keys(definition, changed, previous, profile)
            ):
                due.append(definition)
            elif definition.name in previous.segments:
                members.append(definition.name)
    errors: dict[str, str] = {}
    recheck_at = next_change(terms, profile, now_ms)
    if not due:
        return Evaluation(frozenset(members), errors, recheck_at)
    # One context for all expressions due: building it is the expensive part.
    context = cel.Context(cel_variables(due, profile, now_ms))
    for definition in due:
        try:
            result = definition.program.execute(context)
        except Exception as exc:
            errors[definition.name] = f"{type(exc).__name__}: {exc}"
            continue
        if result is True:
            members.append(definition.name)
        elif result is not False:
            errors[definition.name] = f"expression gave {type(result).__name__}, not bool"
    return Evaluation(frozenset(members), errors, recheck_at)


@functools.lru_cache(maxsize=64)
def _inputs(
    definitions: tuple[SegmentDefinition, ...],
) -> tuple[frozenset[str], tuple[ClockTerm, ...]]:
    """The Profile attributes ``definitions`` read, and their clock terms."""
    read = frozenset(
        attribute
        for d in definitions
        for attribute in (*d.sources, *(attribute for attribute, _ in d.keyed_sources))
    )
    return read, tuple(term for d in definitions for term in d.clock or ())


def fingerprint(definitions: Sequence[SegmentDefinition]) -> str:
    """What a profile records its segments were evaluated under: every name and expression.

    Any change to the definitions (a segment added, removed or rewritten) changes it, so
    each profile is evaluated in full once more the next time it changes.
    """
    text = "\n".join(sorted(f"{d.name}\t{d.when}" for d in definitions))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _changed(attributes: frozenset[str], before: Profile, after: Profile) -> frozenset[str]:
    """Those of ``attributes`` whose values differ: each compared once per evaluation,
    however many expressions read it."""
    # Containers are replaced, never mutated (see streams.profiles.model), so an identical
    # object is an unchanged value; equality decides the rest.
    return frozenset(
        attribute
        for attribute in attributes
        if (old := getattr(before, attribute)) is not (new := getattr(after, attribute))
        and old != new
    )


def _changed_at_keys(
    definition: SegmentDefinition, changed: frozenset[str], before: Profile, after: Profile
) -> bool:
    for attribute, keys in definition.keyed_sources:
        if attribute in changed:
            old, new = getattr(before, attribute), getattr(after, attribute)
            if any(old.get(key) != new.get(key) for key in keys):
                return True
    return False


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
