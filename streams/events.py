"""The input event model shared by every domain: plain, immutable data.

The codec turns wire bytes (Avro or JSON) into an :class:`Event`; the pure cores
(`profiles.reducer`, `segments`, `journeys`) read it; the Faust shell moves it
between stages as compact JSON (:meth:`Event.to_wire` / :meth:`Event.from_wire`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import orjson


class EventKind(StrEnum):
    """The kinds of input event; the value is the CLI name."""

    PAGE_VIEW = "page-view"
    ORDER = "order"
    EMAIL = "email"
    IDENTIFY = "identify"
    # A custom event (Segment's track with any other name): counted per name on the profile.
    TRACK = "track"

    @property
    def topic_suffix(self) -> str:
        return _TOPIC_SUFFIX[self]

    @property
    def schema_name(self) -> str:
        """Avro record name (full name is ``cdp.<schema_name>``)."""
        return _SCHEMA_NAME[self]


_TOPIC_SUFFIX = {
    EventKind.PAGE_VIEW: "page-views",
    EventKind.ORDER: "orders",
    EventKind.EMAIL: "email-engagement",
    EventKind.IDENTIFY: "identify",
    EventKind.TRACK: "track",
}
_SCHEMA_NAME = {
    EventKind.PAGE_VIEW: "PageView",
    EventKind.ORDER: "Order",
    EventKind.EMAIL: "EmailEngagement",
    EventKind.IDENTIFY: "Identify",
    EventKind.TRACK: "Track",
}


class IdentifierKind(StrEnum):
    """Kinds of identifier, strongest first (the profile id derives from the strongest)."""

    USER_ID = "user_id"
    EMAIL = "email"
    ANONYMOUS_ID = "anonymous_id"

    @property
    def strength(self) -> int:
        """Higher is stronger: a weaker profile may be merged into a stronger one."""
        return _STRENGTH[self]


_STRENGTH = {IdentifierKind.ANONYMOUS_ID: 0, IdentifierKind.EMAIL: 1, IdentifierKind.USER_ID: 2}


def identifier_key(kind: IdentifierKind, value: str) -> str:
    """How identifiers are keyed everywhere: ``"<kind>:<value>"``, e.g. ``email:ann@x.io``."""
    # A StrEnum formats as its value; `kind.value` is a descriptor call, on every event.
    return f"{kind}:{value}"


# Every kind, strongest first: iterating the enum itself is slow for every event.
IDENTIFIER_KINDS: tuple[IdentifierKind, ...] = tuple(IdentifierKind)


def split_identifier_key(key: str) -> tuple[IdentifierKind, str]:
    kind, _, value = key.partition(":")
    return IdentifierKind(kind), value


@dataclass(frozen=True, slots=True)
class Identity:
    anonymous_id: str | None = None
    user_id: str | None = None
    email: str | None = None

    def identifiers(self) -> list[tuple[IdentifierKind, str]]:
        """All identifiers present, strongest first."""
        found = []
        for kind in IDENTIFIER_KINDS:
            value = getattr(self, kind)
            if value:
                found.append((kind, value))
        return found

    def strongest(self) -> tuple[IdentifierKind, str]:
        """The strongest identifier; the codec guarantees there is at least one."""
        return self.identifiers()[0]

    def keys(self) -> list[str]:
        """Identifier keys of all identifiers present, strongest first."""
        return [identifier_key(kind, value) for kind, value in self.identifiers()]

    def to_dict(self) -> dict[str, str | None]:
        return {"anonymous_id": self.anonymous_id, "user_id": self.user_id, "email": self.email}


@dataclass(frozen=True, slots=True)
class Event:
    """A validated input event.

    ``occurred_at`` is epoch milliseconds (UTC). ``body`` holds the kind-specific
    fields exactly as the Avro schema names them (e.g. ``url``, ``items``, ``action``),
    with optional fields present as ``None`` when absent.
    """

    kind: EventKind
    event_id: str
    occurred_at: int
    identity: Identity
    body: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "identity": self.identity.to_dict(),
            "body": self.body,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(
            kind=EventKind(raw["kind"]),
            event_id=raw["event_id"],
            occurred_at=raw["occurred_at"],
            identity=Identity(**raw["identity"]),
            body=raw["body"],
        )

    def to_wire(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_wire(cls, data: bytes) -> Event:
        return cls.from_dict(orjson.loads(data))


class IdentifierCaps(NamedTuple):
    """How many identifiers of each kind one profile may hold (guards against blob profiles)."""

    user_ids: int = 1
    emails: int = 5
    anonymous_ids: int = 50

    def of(self, kind: str) -> int:
        """The cap for an identifier kind (``"user_id"``, ``"email"``, ``"anonymous_id"``)."""
        return int(getattr(self, IDENTIFIER_FIELDS[kind]))


#: Identifier kind -> the field holding that kind, in Profile and in IdentifierCaps alike.
IDENTIFIER_FIELDS = {"user_id": "user_ids", "email": "emails", "anonymous_id": "anonymous_ids"}
DEFAULT_CAPS = IdentifierCaps()


# Values that tracking snippets and test fixtures send when they have no real identifier;
# linking on them would fold strangers into one "blob" profile.
DEFAULT_BLOCKED_IDENTIFIERS = (
    "null",
    "undefined",
    "none",
    "nil",
    "nan",
    "unknown",
    "anonymous",
    "[object object]",
    "0",
    "-1",
    "test@test.com",
    "test@example.com",
    "noreply@example.com",
)


ENTERED = "entered"
EXITED = "exited"


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


def now_ms() -> int:
    return time.time_ns() // 1_000_000
