"""Pure identity resolution: identifiers -> profile id, and which links an event asks for.

Identifiers are keyed ``"<kind>:<value>"`` (e.g. ``email:ann@example.com``). A person's
profile id derives from their strongest identifier (user id, then email, then anonymous
id), hashed so that ids carry no personal data and stay stable across restarts, and placed
in that identifier's partition (:func:`profile_id_for`). The
identity table maps every identifier to its :class:`Owner`; :func:`decide_claim` is the
one rule for what happens when a profile asks for an identifier somebody else owns.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from streams.events import Event, IdentifierKind, Identity, identifier_key, split_identifier_key
from streams.partitioning import key_partition, partition_of


def profile_id_for(key: str, partitions: int) -> str:
    """The id of the profile identifier ``key`` founds: a hash of the key, in its partition.

    In the same partition as the key, so that the profile's messages are handled where the
    identifier's are, with no hop between them (:mod:`streams.steps.in_place`). Salts are tried
    in order until the hash lands there (about ``partitions`` tries), so the id is the same
    on every run. The number of partitions is fixed for a deployment's life: the tables'
    keys are partitioned by it too.
    """
    target = key_partition(key.encode(), partitions)
    salt = 0
    while True:
        salted = f"{key}#{salt}" if salt else key
        profile_id = "p_" + hashlib.sha256(salted.encode()).hexdigest()[:24]
        # Uncached: most candidates are never seen again.
        if partition_of(profile_id.encode(), partitions) == target:
            return profile_id
        salt += 1


def routing_key(event: Event) -> str:
    """The key an event is resolved under: its strongest identifier."""
    kind, value = event.identity.strongest()
    return identifier_key(kind, value)


@dataclass(frozen=True, slots=True)
class Owner:
    """A profile as the identity table knows it: its id and its rank.

    The rank is the kind of identifier the profile id derives from, its strongest. Merges
    only ever fold a weaker profile into a stronger one, so a rank never changes.
    """

    profile_id: str
    rank: IdentifierKind

    def encode(self) -> bytes:
        return f"{self.rank.value} {self.profile_id}".encode()

    @classmethod
    def decode(cls, data: bytes) -> Owner:
        rank, _, profile_id = data.decode().partition(" ")
        return cls(profile_id, IdentifierKind(rank))

    @classmethod
    def of_key(cls, key: str, partitions: int) -> Owner:
        """The profile an identifier founds when nobody owns it yet."""
        return cls(profile_id_for(key, partitions), split_identifier_key(key)[0])


class ClaimOutcome(StrEnum):
    LINKED = "linked"
    ALREADY_LINKED = "already_linked"
    MERGE = "merge"
    REFUSED = "refused"


class RefusalReason(StrEnum):
    OWNED_BY_OTHER_PROFILE = "owned_by_other_profile"
    CAP_EXCEEDED = "cap_exceeded"
    SUPPRESSED = "suppressed"  # a privacy request suppressed the identifier


def decide_claim(key: str, owner: Owner | None, claimant: Owner) -> ClaimOutcome:
    """Whether identifier ``key``, owned by ``owner``, may join ``claimant``.

    A profile that shares an identifier with a stronger one is the same person seen with
    less information (an anonymous device, a subscriber known by email only): it merges
    into the stronger one, if the caps allow (the weaker side checks them). Profiles of
    equal rank keep what they own: two user ids are two people, and so are two email-only
    profiles seen on one device (the device stays with the first).
    """
    if owner is None:
        return ClaimOutcome.LINKED
    if owner.profile_id == claimant.profile_id:
        return ClaimOutcome.ALREADY_LINKED
    if owner.rank.strength < claimant.rank.strength:
        return ClaimOutcome.MERGE
    return ClaimOutcome.REFUSED


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


def redacted(key: str) -> str:
    """An identifier key fit for logs: its kind and a short hash, never the value."""
    kind, _, value = key.partition(":")
    return f"{kind}:#{hashlib.sha256(value.encode()).hexdigest()[:10]}"
