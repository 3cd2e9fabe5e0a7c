"""The commands the identity and profile steps send each other, next to the events.

Commands travel with the events they are ordered with, keyed by what they act on: handled
in place when the key lives in the partition being handled (:mod:`streams.steps.in_place`), on
the internal topics when not, told apart there by the ``cdp-command`` header (events carry
none):

=========== ================= ======================================================
command     topic, key        meaning
=========== ================= ======================================================
claim       identity, key K   profile P took identifier K and asks the table for it
repoint     identity, key K   profile C was merged into P: K, if still C's, is P's now
hand-over   profile, C        K, owned by C, was claimed by stronger P: merge into P
absorb      profile, P        C's whole state, to merge into P (then P re-points C's keys)
release     profile, P        the table refused K to P: give it up
forget      identity, key K   profile P is erased: K, if still P's, is nobody's now
forget      profile, C        P is erased: C's forward to P (or along its merges) goes
=========== ================= ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import orjson

from streams.events import Event, IdentifierKind
from streams.identity.resolver import Owner, RefusalReason

COMMAND_HEADER = "cdp-command"
OWNED_KEY_HEADER = "cdp-owned-key"


class Command(StrEnum):
    CLAIM = "claim"
    REPOINT = "repoint"
    HAND_OVER = "hand-over"
    ABSORB = "absorb"
    RELEASE = "release"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class Cause:
    """The input event that started a chain of commands: every output names it."""

    event_id: str
    occurred_at: int


class _Message:
    # Messages are not slotted: slotted dataclasses break ``super()`` in their methods.
    command: Command

    def to_bytes(self) -> bytes:
        # orjson serializes dataclasses (nested ones and enums too) without copying them.
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls._from_dict(orjson.loads(data))

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        raw["cause"] = Cause(**raw["cause"])
        return cls(**raw)


@dataclass(frozen=True)
class Claim(_Message):
    profile_id: str
    rank: IdentifierKind
    # Every identifier the claimant holds (this one included), for the cap check of a merge.
    identifiers: tuple[str, ...]
    cause: Cause
    command = Command.CLAIM

    @property
    def claimant(self) -> Owner:
        return Owner(self.profile_id, self.rank)

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        raw["rank"] = IdentifierKind(raw["rank"])
        raw["identifiers"] = tuple(raw["identifiers"])
        return super()._from_dict(raw)


@dataclass(frozen=True)
class Repoint(_Message):
    # The merged-away profile and every profile merged into it earlier: re-points can
    # arrive in any order along a chain of merges, and each may find any of them as owner.
    from_profile_ids: tuple[str, ...]
    into: str
    rank: IdentifierKind
    command = Command.REPOINT

    @property
    def new_owner(self) -> Owner:
        return Owner(self.into, self.rank)

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["from_profile_ids"]), raw["into"], IdentifierKind(raw["rank"]))


@dataclass(frozen=True)
class HandOver(_Message):
    key: str
    claim: Claim
    command = Command.HAND_OVER

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(raw["key"], Claim._from_dict(raw["claim"]))


@dataclass(frozen=True)
class Absorb(_Message):
    from_profile_id: str
    profile: dict[str, Any]  # the merged-away profile, as Profile.to_dict()
    # Identifiers the absorber re-points once it holds the state, so that no event reaches
    # it directly before the state it belongs to (it would be counted twice).
    identifiers: tuple[str, ...]
    cause: Cause
    command = Command.ABSORB

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        raw["identifiers"] = tuple(raw["identifiers"])
        return super()._from_dict(raw)


@dataclass(frozen=True)
class Release(_Message):
    key: str
    owner: str  # the profile the identity table gives the identifier to
    reason: RefusalReason
    cause: Cause
    command = Command.RELEASE

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        raw["reason"] = RefusalReason(raw["reason"])
        return super()._from_dict(raw)


@dataclass(frozen=True)
class Forget(_Message):
    # The erased profile and every profile merged into it: an identifier or a forward may
    # still point to any of them (re-points race along a chain of merges).
    profile_ids: tuple[str, ...]
    command = Command.FORGET

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["profile_ids"]))


#: A command by its header value.
COMMANDS: dict[bytes, type[Claim | Repoint | HandOver | Absorb | Release | Forget]] = {
    cls.command.value.encode(): cls for cls in (Claim, Repoint, HandOver, Absorb, Release, Forget)
}


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """An event on its way to its profile.

    ``owned`` is the identifier it was routed under when the identity table gives that
    identifier to the receiving profile (so the profile need not claim it).
    """

    event: Event
    owned: str | None = None


InternalMessage = RoutedEvent | Claim | Repoint | HandOver | Absorb | Release | Forget


def encode(message: InternalMessage) -> tuple[bytes, dict[str, bytes]]:
    """Value and headers of a message on an internal topic."""
    if isinstance(message, RoutedEvent):
        owned = {OWNED_KEY_HEADER: message.owned.encode()} if message.owned else {}
        return message.event.to_wire(), owned
    return message.to_bytes(), {COMMAND_HEADER: message.command.value.encode()}


def decode(value: bytes, headers: dict[str, bytes]) -> InternalMessage:
    command = headers.get(COMMAND_HEADER)
    if command is not None:
        return COMMANDS[command].from_bytes(value)
    owned = headers.get(OWNED_KEY_HEADER)
    return RoutedEvent(Event.from_wire(value), owned.decode() if owned else None)


class Out(StrEnum):
    """Where a step sends: the two internal topics and the outputs."""

    IDENTITY = "identity"
    PROFILE = "profile"
    SEGMENT_CHANGES = "segment-changes"
    JOURNEYS = "journeys"
    JOURNEY_EVENTS = "journey-events"
    IDENTITY_MERGES = "identity-merges"
    PRIVACY_EVENTS = "privacy-events"


#: Where the identity and profile steps send each other messages; the rest are outputs.
INTERNAL = (Out.IDENTITY, Out.PROFILE)

#: The Avro record (``schemas/``) each output topic carries.
OUTPUT_RECORDS = {
    Out.SEGMENT_CHANGES: "SegmentChange",
    Out.JOURNEYS: "JourneyTrigger",
    Out.JOURNEY_EVENTS: "JourneyEvent",
    Out.IDENTITY_MERGES: "IdentityMerge",
    Out.PRIVACY_EVENTS: "PrivacyEvent",
}


@dataclass(frozen=True, slots=True)
class Send:
    topic: Out
    key: str
    message: Any
    """A command or RoutedEvent (internal topics) or an output record (``to_record()``)."""
    waits_its_turn: bool = False
    """Handled after what its topic holds already, never in place: a question asked again
    until another message, on its way, has arrived (:mod:`streams.steps.in_place`)."""


@dataclass(frozen=True, slots=True)
class IdentityMerge:
    """The audit record of a merge, on the identity-merges topic."""

    from_profile_id: str
    into_profile_id: str
    identifiers: tuple[str, ...]
    cause: Cause

    def to_record(self) -> dict[str, Any]:
        return {
            "from_profile_id": self.from_profile_id,
            "into_profile_id": self.into_profile_id,
            "identifiers": list(self.identifiers),
            "cause_event_id": self.cause.event_id,
            "occurred_at": self.cause.occurred_at,
        }


@dataclass(frozen=True, slots=True)
class PrivacyEvent:
    """A record of the privacy-events topic: what was done to whose data, naming nobody."""

    type: str
    profile_hash: str
    at: int
    anonymous: bool

    def to_record(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "profile_hash": self.profile_hash,
            "at": self.at,
            "anonymous": self.anonymous,
        }
