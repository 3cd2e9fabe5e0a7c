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
request     identity, R       privacy request R (in K's partition): open it, suppress
erase       identity, K       erase the profile K belongs to (request R)
erase       profile, P        erase P and everything pointing to it
unlink      identity, K       P was erased: K, if still P's (or a profile merged into
                              it), goes
forget      profile, C        C was merged into erased P: its forward goes
completed   identity, R       request R is done: close it, once
=========== ================= ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import orjson

from streams.events import Event, IdentifierKind
from streams.identity.resolver import Owner, RefusalReason
from streams.privacy.requests import RequestType

COMMAND_HEADER = "cdp-command"
OWNED_KEY_HEADER = "cdp-owned-key"


class Command(StrEnum):
    CLAIM = "claim"
    REPOINT = "repoint"
    HAND_OVER = "hand-over"
    ABSORB = "absorb"
    RELEASE = "release"
    REQUEST = "request"
    ERASE = "erase"
    UNLINK = "unlink"
    FORGET = "forget"
    COMPLETED = "completed"


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
        if "cause" in raw:
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
class Request(_Message):
    """A privacy request, keyed by its id (which lives in the identifier's partition)."""

    request_id: str
    type: RequestType
    identifier: str
    received_at: int
    command = Command.REQUEST

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        raw["type"] = RequestType(raw["type"])
        return super()._from_dict(raw)


@dataclass(frozen=True)
class Erase(_Message):
    """Erase whatever the key (an identifier, then a profile id) leads to, for a request.

    ``received_at`` stands in for the event time of what the erasure emits, so a replayed
    erasure emits the same records."""

    request_id: str
    received_at: int
    suppress: bool  # suppress_with_delete: every identifier of the profile is suppressed
    command = Command.ERASE


@dataclass(frozen=True)
class Unlink(_Message):
    # The erased profile and every profile merged into it (as in Repoint).
    from_profile_ids: tuple[str, ...]
    suppress: bool  # and suppress the identifier (suppress_with_delete)
    # An erasure on request: the identifier's events that happened by then are dropped when
    # read afterwards (a replay after a crash, a late producer). None: an expiry.
    erased_at: int | None = None
    command = Command.UNLINK

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["from_profile_ids"]), raw["suppress"], raw.get("erased_at"))


@dataclass(frozen=True)
class Forget(_Message):
    # The erased profiles: a forward into any of them goes.
    erased: tuple[str, ...]
    command = Command.FORGET

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["erased"]))


@dataclass(frozen=True)
class Completed(_Message):
    request_id: str
    profile_found: bool
    command = Command.COMPLETED


PrivacyMessage = Request | Completed
"""The messages the privacy step takes (keyed by a request id); the rest are the
identity and profile steps'."""

#: A command by its header value.
COMMANDS: dict[
    bytes,
    type[Claim | Repoint | HandOver | Absorb | Release | PrivacyMessage | Erase | Unlink | Forget],
] = {
    cls.command.value.encode(): cls
    for cls in (
        Claim,
        Repoint,
        HandOver,
        Absorb,
        Release,
        Request,
        Erase,
        Unlink,
        Forget,
        Completed,
    )
}


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """An event on its way to its profile.

    ``owned`` is the identifier it was routed under when the identity table gives that
    identifier to the receiving profile (so the profile need not claim it).
    """

    event: Event
    owned: str | None = None


InternalMessage = (
    RoutedEvent
    | Claim
    | Repoint
    | HandOver
    | Absorb
    | Release
    | Request
    | Erase
    | Unlink
    | Forget
    | Completed
)


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
