"""Pure identity resolution: identifiers -> profile id, and which links an event asks for.

Identifiers are keyed ``"<kind>:<value>"`` (e.g. ``email:ann@example.com``). A person's
profile id derives from their strongest identifier (user id, then email, then anonymous
id), hashed so that ids carry no personal data and stay stable across restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from streams.events import Event, IdentifierKind


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
