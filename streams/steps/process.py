"""What the profile agent calls: ``process(profile, event) -> Outcome``, and the merge steps.

Pure: state in, state and outputs out. Outputs carry the event's time, never the wall
clock, so replaying an event stream reproduces them exactly; ``now_ms`` only feeds
time-based segment rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from streams.events import DEFAULT_CAPS, Event, IdentifierCaps, SegmentChange
from streams.identity.identifiers import admit, merge_marker, release, with_refused
from streams.identity.resolver import RefusalReason
from streams.journeys.definitions import (
    NO_POLICIES,
    Flows,
    JourneyDefinition,
    Policies,
    load_flows,
)
from streams.journeys.flow import (
    Advance,
    Book,
    JourneyEvent,
    Occurrence,
    Timer,
    advance,
    concerns,
)
from streams.journeys.rules import JourneyTrigger, record
from streams.profiles.merge import merge
from streams.profiles.model import RECENT_EVENT_IDS_DEFAULT, Profile, event_fingerprint
from streams.profiles.reducer import apply, remember
from streams.segments.conditions import compile_condition
from streams.segments.definitions import SegmentDefinition, load_segments
from streams.segments.evaluator import diff, evaluate, fingerprint

__all__ = [
    "JourneyEvent",
    "JourneyTrigger",
    "Outcome",
    "Rules",
    "SegmentChange",
    "absorb",
    "backfill",
    "backfill_cause",
    "hand_over",
    "process",
    "recheck",
    "recheck_cause",
    "release_identifier",
]


@dataclass(frozen=True, slots=True)
class Rules:
    segments: tuple[SegmentDefinition, ...]
    journeys: tuple[JourneyDefinition, ...]
    recent_ids: int = RECENT_EVENT_IDS_DEFAULT
    caps: IdentifierCaps = DEFAULT_CAPS
    policies: Policies = NO_POLICIES
    segment_fingerprint: str = field(init=False, compare=False)
    """What profiles record their segments were evaluated under: the segment definitions
    and the entries of ``backfill`` journeys (a profile stored under others is evaluated
    in full, and enters those journeys when a member; see :func:`backfill`)."""
    flows: Flows = field(init=False, compare=False, repr=False)
    """The journeys and their policies, as the flow engine takes them."""
    _blank: Profile | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        flows = Flows(self.journeys, self.policies)
        segments = fingerprint(self.segments)
        if flows.backfilled:
            entries = "\n".join(sorted(f"{j.name}\t{j.entry.pattern}" for j in flows.backfilled))
            segments = hashlib.blake2b(f"{segments}\n{entries}".encode(), digest_size=8).hexdigest()
        object.__setattr__(self, "segment_fingerprint", segments)
        object.__setattr__(self, "flows", flows)
        object.__setattr__(self, "_blank", None)

    def outdated(self, segment_rules: str | None) -> bool:
        """Whether a profile stored with ``segment_rules`` was evaluated under other
        definitions (not never, nor a forward: ``""``, ``None``)."""
        return bool(segment_rules) and segment_rules != self.segment_fingerprint

    def blank(self, now_ms: int) -> Profile:
        """What a new profile is evaluated against: an empty profile with its segments at
        ``now_ms``, so a new profile's first event runs only the expressions whose inputs it
        changed, not all of them.

        It is a stored profile like any other to the evaluator, recheck time included;
        evaluated once, and again once the clock reaches that recheck time (an empty
        profile's clock terms flip at the epoch plus each duration: in practice never).
        """
        blank = self._blank
        recheck_at = None if blank is None else blank.segment_recheck_at
        if blank is None or (recheck_at is not None and now_ms >= recheck_at):
            blank = Profile.new("")
            evaluation = evaluate(self.segments, blank, now_ms)
            blank.segments = tuple(sorted(evaluation.members))
            blank.segment_rules = self.segment_fingerprint
            blank.segment_recheck_at = evaluation.recheck_at
            object.__setattr__(self, "_blank", blank)
        return blank

    @classmethod
    def load(
        cls,
        segments_file: Path | None = None,
        journeys_file: Path | None = None,
        recent_ids: int = RECENT_EVENT_IDS_DEFAULT,
        caps: IdentifierCaps = DEFAULT_CAPS,
    ) -> Rules:
        """Load both files (``None``: shipped defaults); raises DefinitionError."""
        segments = tuple(load_segments(segments_file))
        flows = load_flows(journeys_file, [s.name for s in segments], compile_condition)
        return cls(segments, flows.journeys, recent_ids, caps, flows.policies)


@dataclass(frozen=True, slots=True)
class Outcome:
    profile: Profile
    duplicate: bool
    segment_changes: tuple[SegmentChange, ...] = ()
    triggers: tuple[JourneyTrigger, ...] = ()
    journey_events: tuple[JourneyEvent, ...] = ()
    # Segment name -> error, for expressions that failed on this profile (counted as
    # non-membership); for metrics and logs.
    evaluation_errors: dict[str, str] = field(default_factory=dict)
    # Identifier keys the profile took and must claim in the identity table.
    claims: tuple[str, ...] = ()
    # Identifier keys refused because the profile holds as many of that kind as allowed.
    refused: tuple[str, ...] = ()


def process(
    profile: Profile | None,
    profile_id: str,
    event: Event,
    rules: Rules,
    now_ms: int,
    *,
    owned: str | None = None,
) -> Outcome:
    """Fold ``event`` into ``profile`` (None: a new one) and derive what to emit.

    ``owned`` is the identifier the event was routed under when the identity table already
    gives it to this profile; every other new identifier of the event is claimed.
    """
    before = _existing(profile, profile_id)
    previous = rules.blank(now_ms) if profile is None else None
    if event_fingerprint(event.event_id) in before.recent_event_ids:
        return Outcome(profile=before, duplicate=True)
    # Steps due after the event happened wait for it: an order placed before a reminder's
    # due time stops the reminder, even when the order is read after that time.
    before, rechecks = _rechecked(before, rules, min(now_ms, event.occurred_at))
    admission = admit(before, event.identity, rules.caps, owned)
    if admission.identity is not event.identity:
        event = dataclasses.replace(event, identity=admission.identity)
    after = apply(before, event, recent_ids=rules.recent_ids, caps=rules.caps)
    if admission.refused:
        with_refused(after, admission.refused, RefusalReason.CAP_EXCEEDED)
    outcome = _derive(
        before,
        after,
        event,
        event.event_id,
        event.occurred_at,
        rules,
        now_ms,
        claims=admission.claims,
        refused=admission.refused,
        previous=previous,
    )
    return _after(rechecks, outcome)


def absorb(
    profile: Profile | None,
    profile_id: str,
    other: Profile,
    cause_event_id: str,
    occurred_at: int,
    rules: Rules,
    now_ms: int,
) -> Outcome:
    """Merge ``other`` (a weaker profile of the same person) into ``profile``.

    Segments are re-evaluated once and their changes emitted; journeys triggered by segment
    changes may fire, event-triggered ones do not (there is no new event). A replayed
    merge is recognised by its marker and changes nothing.
    """
    before = _existing(profile, profile_id)
    marker = merge_marker(other.profile_id)
    if marker in before.recent_event_ids:
        return Outcome(profile=before, duplicate=True)
    before, rechecks = _rechecked(before, rules, now_ms)
    after = merge(before, other, recent_ids=rules.recent_ids, caps=rules.caps)
    after.recent_event_ids = remember(after.recent_event_ids, marker, rules.recent_ids)
    outcome = _derive(before, after, None, cause_event_id, occurred_at, rules, now_ms)
    return _after(rechecks, outcome)


def recheck(profile: Profile, at: int, rules: Rules) -> Outcome:
    """Look at ``profile`` at its wake time ``at`` (:attr:`Profile.wake_at`), when no event
    came since: re-evaluate its time-based segments if their recheck is due, then run its
    journey steps due by ``at``.

    Both run at ``at``, not at the wall clock, and name :func:`recheck_cause`: a recheck
    repeated after a crash emits the same changes, triggers and journey events, with the same
    ids. A time that is no longer the profile's (an event or an earlier recheck looked at it
    since) changes nothing, nor does a segment recheck scheduled under other definitions;
    under other definitions the profile is evaluated in full at its next change, as every
    stored profile is.
    """
    if profile.wake_at != at:
        return Outcome(profile=profile, duplicate=True)
    outcomes: list[Outcome] = []
    if profile.segment_recheck_at == at and profile.segment_rules == rules.segment_fingerprint:
        outcome = _derive(profile, profile.clone(), None, recheck_cause(at), at, rules, at)
        outcomes.append(outcome)
        profile = outcome.profile
    elif profile.segment_recheck_at == at and profile.journey_due_at is not None:
        # Scheduled under other segment definitions: dropped (the next change evaluates the
        # profile in full), so that its wake time becomes the journey step's.
        profile = profile.clone()
        profile.segment_recheck_at = None
        outcomes.append(Outcome(profile, False))
    due = profile.journey_due_at
    if due is not None and due <= at:
        after = profile.clone()
        book = Book.from_dict(profile.journey_flows)
        outcomes.append(_journeys(after, book, advance(rules.flows, book, after, Timer(at), at)))
    if not outcomes:
        return Outcome(profile=profile, duplicate=True)
    return _after(outcomes[:-1], outcomes[-1])


def backfill(profile: Profile, rules: Rules, now_ms: int) -> Outcome:
    """Evaluate ``profile``, stored under other definitions, in full at ``now_ms`` without an
    event (the worker's background evaluation): its segment changes and the entries of
    ``backfill`` journeys name :func:`backfill_cause`. A profile already evaluated under
    these definitions (or never: stored before fingerprints) changes nothing."""
    if not rules.outdated(profile.segment_rules):
        return Outcome(profile=profile, duplicate=True)
    _, outcomes = _rechecked(profile, rules, now_ms)
    return _after(outcomes[:-1], outcomes[-1])


def backfill_cause(rules: Rules) -> str:
    """What the changes of a profile evaluated under new definitions name as cause."""
    return f"backfill:{rules.segment_fingerprint}"


def _rechecked(profile: Profile, rules: Rules, now_ms: int) -> tuple[Profile, list[Outcome]]:
    """``profile`` with every recheck due by ``now_ms`` done first, and their outcomes.

    An event or a merge that comes after a recheck time but before the worker's recheck
    (or after a crash lost the recheck's write) finds the profile as the recheck left it:
    the clock's changes are the recheck's, with the recheck's cause and time, whichever
    comes first. So they are the same in every run, crashed or not.

    A profile stored under other definitions is then evaluated under these, as the
    background evaluation (:func:`backfill`) would have: what the definitions changed is
    theirs, with their cause, not the event's.
    """
    rechecks: list[Outcome] = []
    while (at := profile.wake_at) is not None and at <= now_ms:
        outcome = recheck(profile, at, rules)
        if outcome.duplicate:  # scheduled under other definitions
            break
        rechecks.append(outcome)
        profile = outcome.profile
    if rules.outdated(profile.segment_rules):
        cause = backfill_cause(rules)
        outcome = _derive(profile, profile.clone(), None, cause, now_ms, rules, now_ms)
        rechecks.append(outcome)
        profile = outcome.profile
    return profile, rechecks


def _after(rechecks: list[Outcome], outcome: Outcome) -> Outcome:
    """``outcome`` with the outputs of the rechecks done before it, in order.

    A duplicate drops them: its profile is not stored, and the rechecks come again, the
    same, from the worker's schedule or the next change.
    """
    if not rechecks or outcome.duplicate:
        return outcome
    outcomes = [*rechecks, outcome]
    return Outcome(
        profile=outcome.profile,
        duplicate=False,
        segment_changes=tuple(c for o in outcomes for c in o.segment_changes),
        triggers=tuple(t for o in outcomes for t in o.triggers),
        journey_events=tuple(e for o in outcomes for e in o.journey_events),
        evaluation_errors={k: v for o in outcomes for k, v in o.evaluation_errors.items()},
        claims=outcome.claims,
        refused=outcome.refused,
    )


def recheck_cause(at: int) -> str:
    """What segment changes and journey triggers of a recheck at ``at`` name as cause."""
    return f"recheck:{at}"


def release_identifier(
    profile: Profile,
    key: str,
    owner: str,
    reason: RefusalReason,
    cause_event_id: str,
    occurred_at: int,
    rules: Rules,
    now_ms: int,
) -> Outcome:
    """Give up identifier ``key``, which the identity table refused to this profile."""
    before, rechecks = _rechecked(profile, rules, now_ms)
    after = release(before, key, owner, reason)
    if after is None:
        return Outcome(profile=profile, duplicate=True)
    outcome = _derive(before, after, None, cause_event_id, occurred_at, rules, now_ms)
    return _after(rechecks, outcome)


def hand_over(profile: Profile, cause_event_id: str, occurred_at: int) -> tuple[SegmentChange, ...]:
    """The segment exits of a profile that is merged away: it is a member of nothing now."""
    return diff(
        profile.profile_id,
        profile.segments,
        set(),
        last_sequence=profile.segment_sequence,
        occurred_at=occurred_at,
        cause_event_id=cause_event_id,
    )


def _existing(profile: Profile | None, profile_id: str) -> Profile:
    if profile is None:
        return Profile.new(profile_id)
    if profile.profile_id != profile_id:
        raise ValueError(f"profile {profile.profile_id!r} handed in for {profile_id!r}")
    return profile


def _derive(
    before: Profile,
    after: Profile,
    event: Event | None,
    cause_event_id: str,
    occurred_at: int,
    rules: Rules,
    now_ms: int,
    *,
    claims: tuple[str, ...] = (),
    refused: tuple[str, ...] = (),
    previous: Profile | None = None,
) -> Outcome:
    """Complete ``after`` (a fresh object nobody else holds) with segments and journeys.

    ``previous`` stands in for ``before`` in the evaluation (a new profile's blank).
    """
    # Segments evaluated under other definitions (or never) are evaluated in full.
    redefined = rules.outdated(before.segment_rules)
    if previous is None and before.segment_rules == rules.segment_fingerprint:
        previous = before
    evaluation = evaluate(rules.segments, after, now_ms, previous)
    after.segment_rules = rules.segment_fingerprint
    after.segment_recheck_at = evaluation.recheck_at
    changes = diff(
        after.profile_id,
        after.segments,
        evaluation.members,
        last_sequence=after.segment_sequence,
        occurred_at=occurred_at,
        cause_event_id=cause_event_id,
    )
    if changes:
        after.segments = tuple(sorted(evaluation.members))
        after.segment_sequence = changes[-1].sequence
    journeys = Outcome(after, False)
    occurrence = Occurrence(event, changes, cause_event_id, backfill=redefined)
    if rules.journeys and concerns(rules.flows, after.journey_flows, before, after, occurrence):
        book = Book.from_dict(after.journey_flows)
        moved = advance(
            rules.flows, book, after, occurrence, occurred_at, before=before, entered=after.journeys
        )
        journeys = _journeys(after, book, moved)
    return Outcome(
        profile=after,
        duplicate=False,
        segment_changes=changes,
        triggers=journeys.triggers,
        journey_events=journeys.journey_events,
        evaluation_errors=evaluation.errors,
        claims=claims,
        refused=refused,
    )


def _journeys(after: Profile, book: Book, moved: Advance) -> Outcome:
    """``after`` (a fresh object nobody else holds) with the journey book ``moved`` left."""
    if moved.book != book:
        after.journey_flows = {} if moved.book.blank else moved.book.to_dict()
        after.journey_due_at = moved.next_due
    if moved.sends:
        after.journeys = record(after.journeys, moved.sends)
    return Outcome(after, False, triggers=moved.sends, journey_events=moved.events)
