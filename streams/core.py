"""The one function the agents call: ``process(profile, event) -> Outcome``.

Pure: state in, state and outputs out. Outputs carry the event's time, never the wall
clock, so replaying an event stream reproduces them exactly; ``now_ms`` only feeds
time-based segment rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streams.events import Event
from streams.journeys.definitions import JourneyDefinition, load_journeys
from streams.journeys.rules import JourneyTrigger, decide, record
from streams.profiles.model import RECENT_EVENT_IDS_DEFAULT, Profile
from streams.profiles.reducer import apply
from streams.segments.definitions import SegmentDefinition, load_segments
from streams.segments.evaluator import SegmentChange, diff, evaluate

__all__ = ["JourneyTrigger", "Outcome", "Rules", "SegmentChange", "process"]


@dataclass(frozen=True, slots=True)
class Rules:
    segments: tuple[SegmentDefinition, ...]
    journeys: tuple[JourneyDefinition, ...]
    recent_ids: int = RECENT_EVENT_IDS_DEFAULT

    @classmethod
    def load(
        cls,
        segments_file: Path | None = None,
        journeys_file: Path | None = None,
        recent_ids: int = RECENT_EVENT_IDS_DEFAULT,
    ) -> Rules:
        """Load both files (``None``: shipped defaults); raises DefinitionError."""
        segments = tuple(load_segments(segments_file))
        journeys = tuple(load_journeys(journeys_file, [s.name for s in segments]))
        return cls(segments, journeys, recent_ids)


@dataclass(frozen=True, slots=True)
class Outcome:
    profile: Profile
    # True when `profile` must be written back (always, unless the event is a duplicate).
    changed: bool
    duplicate: bool
    segment_changes: tuple[SegmentChange, ...] = ()
    triggers: tuple[JourneyTrigger, ...] = ()
    # Segment name -> error, for expressions that failed on this profile (counted as
    # non-membership); for metrics and logs.
    evaluation_errors: dict[str, str] = field(default_factory=dict)


def process(
    profile: Profile | None, profile_id: str, event: Event, rules: Rules, now_ms: int
) -> Outcome:
    """Fold ``event`` into ``profile`` (None: a new one) and derive what to emit."""
    before = Profile.new(profile_id) if profile is None else profile
    if before.profile_id != profile_id:
        raise ValueError(f"profile {before.profile_id!r} handed in for {profile_id!r}")
    after = apply(before, event, recent_ids=rules.recent_ids)
    if after is before:
        return Outcome(profile=before, changed=False, duplicate=True)
    evaluation = evaluate(rules.segments, after, now_ms)
    changes = diff(
        profile_id,
        before.segments,
        evaluation.members,
        last_sequence=before.segment_sequence,
        occurred_at=event.occurred_at,
        cause_event_id=event.event_id,
    )
    # `after` is a fresh object that nobody else holds yet, so it may be completed in place.
    if changes:
        after.segments = tuple(sorted(evaluation.members))
        after.segment_sequence = changes[-1].sequence
    triggers = decide(rules.journeys, before, after, event, changes, now_ms)
    if triggers:
        after.journeys = record(after.journeys, triggers)
    return Outcome(
        profile=after,
        changed=True,
        duplicate=False,
        segment_changes=changes,
        triggers=tuple(triggers),
        evaluation_errors=evaluation.errors,
    )
