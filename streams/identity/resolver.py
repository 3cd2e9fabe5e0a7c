"""Pure identity resolution: identifiers -> profile id, and which links an event asks for.

Identifiers are keyed ``"<kind>:<value>"`` (e.g. ``email:ann@example.com``). A person's
profile id derives from their strongest identifier (user id, then email, then anonymous
id), hashed so that ids carry no personal data and stay stable across restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from streams.events import Event, IdentifierKind, Identity

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


def identifier_key(kind: IdentifierKind, value: str) -> str:
    return f"{kind.value}:{value}"


def profile_id_for(key: str) -> str:
    return "p_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def kind_of(key: str) -> IdentifierKind:
    return IdentifierKind(key.split(":", 1)[0])


def routing_key(event: Event) -> str:
    """The key an event is resolved under: its strongest identifier."""
    kind, value = event.identity.strongest()
    return identifier_key(kind, value)


@dataclass(frozen=True, slots=True)
class Resolution:
    profile_id: str
    claim_routing_key: bool
    """True when the routing key was unknown and now belongs to ``profile_id``."""
    links: tuple[str, ...]
    """The event's other identifier keys, to be pointed at ``profile_id`` by their owners."""


def resolve(event: Event, lookup: Callable[[str], str | None]) -> Resolution:
    """Resolve an event under its routing key, with ``lookup`` reading the identity table."""
    keys = [identifier_key(kind, value) for kind, value in event.identity.identifiers()]
    routing = keys[0]
    known = lookup(routing)
    profile_id = known if known is not None else profile_id_for(routing)
    return Resolution(profile_id=profile_id, claim_routing_key=known is None, links=tuple(keys[1:]))


class LinkOutcome(StrEnum):
    LINKED = "linked"
    ALREADY_LINKED = "already_linked"
    ADOPTED_ANONYMOUS = "adopted_anonymous"
    REFUSED_OWNED = "refused_owned"


def decide_link(key: str, current: str | None, proposed: str) -> LinkOutcome:
    """Whether identifier ``key``, now owned by ``current``, may point at ``proposed``.

    An anonymous id that so far had a profile of its own is adopted by the known person
    it logged in as (later events of that device count toward them). An email or user id
    that already belongs to another profile is never silently re-pointed.
    """
    if current is None:
        return LinkOutcome.LINKED
    if current == proposed:
        return LinkOutcome.ALREADY_LINKED
    if kind_of(key) is IdentifierKind.ANONYMOUS_ID and current == profile_id_for(key):
        return LinkOutcome.ADOPTED_ANONYMOUS
    return LinkOutcome.REFUSED_OWNED


def blocklist(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value.strip().casefold() for value in values)


def without_blocked(
    identity: Identity, blocked: frozenset[str]
) -> tuple[Identity, tuple[IdentifierKind, ...]]:
    """The identity with block-listed values removed, and the kinds that were removed."""
    removed = tuple(
        kind for kind, value in identity.identifiers() if value.strip().casefold() in blocked
    )
    if not removed:
        return identity, ()
    return dataclasses.replace(identity, **{kind.value: None for kind in removed}), removed
