"""What a journey sends and who may receive it: triggers, their ids, eligibility, bookkeeping.

The flow engine (:mod:`streams.journeys.flow`) decides when; this is the shared vocabulary of
its sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.journeys.definitions import JourneyDefinition
from streams.profiles.model import Profile


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
    # Before consent: a complaint revokes the email-marketing consent too, and is the reason.
    if profile.email_counts["bounced"] or profile.email_counts["complained"]:
        return "bounced_or_complained"
    if not profile.consented(journey.consent):
        return "no_consent"
    if profile.newsletter != "subscribed":
        return "not_subscribed"
    return None


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
