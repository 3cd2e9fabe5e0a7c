"""Which journeys fire for one processed event: ``decide(...) -> triggers``, purely.

Enforced: trigger matching, eligibility (email address, consent purpose, newsletter
subscription, no bounce or complaint) and once-per-(journey, step) unless ``repeat``.
Nothing else (delays, exit events, suppression, caps) is enforced yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.events import ENTERED, EXITED, Event, SegmentChange
from streams.journeys.definitions import (
    PAYLOAD_FIELDS,
    JourneyDefinition,
    PayloadSource,
    TriggerKind,
)
from streams.profiles.model import Profile

_CHANGE_FOR = {TriggerKind.SEGMENT_ENTERED: ENTERED, TriggerKind.SEGMENT_EXITED: EXITED}


@dataclass(frozen=True, slots=True)
class JourneyTrigger:
    trigger_id: str
    journey: str
    step: str
    profile_id: str
    email: str
    occurred_at: int
    cause_event_id: str
    payload: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        """Exactly the fields of the email-journeys topic's value."""
        return {
            "trigger_id": self.trigger_id,
            "journey": self.journey,
            "step": self.step,
            "profile_id": self.profile_id,
            "email": self.email,
            "occurred_at": self.occurred_at,
            "cause_event_id": self.cause_event_id,
            "payload": self.payload,
        }


def trigger_id(journey: str, step: str, profile_id: str, cause_event_id: str) -> str:
    """Deterministic, so a replayed event yields the same id and consumers can drop it."""
    key = f"{journey}|{step}|{profile_id}|{cause_event_id}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def ineligibility(journey: JourneyDefinition, profile: Profile) -> str | None:
    """Why ``profile`` may not receive ``journey``'s mail, or None when it may."""
    if profile.email is None:
        return "no_email"
    if not profile.consented(journey.consent):
        return "no_consent"
    if profile.newsletter != "subscribed":
        return "not_subscribed"
    if profile.email_counts["bounced"] or profile.email_counts["complained"]:
        return "bounced_or_complained"
    return None


def decide(
    journeys: Sequence[JourneyDefinition],
    before: Profile,
    after: Profile,
    event: Event | None,
    changes: Sequence[SegmentChange],
    cause_event_id: str,
    occurred_at: int,
) -> list[JourneyTrigger]:
    """The triggers a change of profile causes: at most one per journey, in definition order.

    ``event`` is what changed the profile, or None for a merge (then only segment-change
    triggers can match). ``after`` must already carry its new segments (payloads read
    them). Outputs carry the cause's id and time, never the clock, so replays are identical.
    """
    triggers = []
    for journey in journeys:
        matched, segment = _match(journey, event, changes)
        if not matched:
            continue
        if not journey.repeat and journey.step in after.journeys.get(journey.name, {}):
            continue
        if ineligibility(journey, after) is not None:
            continue
        source = PayloadSource(before, after, event, segment)
        email = after.email
        assert email is not None  # ineligibility() checked it
        triggers.append(
            JourneyTrigger(
                trigger_id=trigger_id(journey.name, journey.step, after.profile_id, cause_event_id),
                journey=journey.name,
                step=journey.step,
                profile_id=after.profile_id,
                email=email,
                occurred_at=occurred_at,
                cause_event_id=cause_event_id,
                payload={name: PAYLOAD_FIELDS[name](source) for name in journey.payload},
            )
        )
    return triggers


def record(
    bookkeeping: dict[str, dict[str, int]], triggers: Iterable[JourneyTrigger]
) -> dict[str, dict[str, int]]:
    """Journey bookkeeping with ``triggers`` recorded (journey -> step -> latest ms).

    Returns a new dict; ``bookkeeping`` belongs to a profile and is left untouched.
    """
    updated = dict(bookkeeping)
    for t in triggers:
        steps = dict(updated.get(t.journey, {}))
        steps[t.step] = max(steps.get(t.step, t.occurred_at), t.occurred_at)
        updated[t.journey] = steps
    return updated


def _match(
    journey: JourneyDefinition, event: Event | None, changes: Sequence[SegmentChange]
) -> tuple[bool, str | None]:
    rule = journey.trigger
    if rule.kind is TriggerKind.EVENT:
        return event is not None and rule.matches_event(event), None
    wanted = _CHANGE_FOR[rule.kind]
    # `changes` is sorted by segment name, so a glob deterministically picks the first.
    for change in changes:
        if change.change == wanted and rule.matches_segment(change.segment):
            return True, change.segment
    return False, None
