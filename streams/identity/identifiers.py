"""Which identifiers a profile holds, purely: the profile's side of the identity graph.

A profile takes an identifier when an event brings it (within the caps per kind) and
claims it in the identity table; the identity table may refuse the claim, and the profile
then releases it. Refused identifiers are remembered, so a shared device or an email of
somebody else is asked for, logged and counted once, not on every event.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from streams.events import (
    IDENTIFIER_FIELDS,
    IdentifierCaps,
    Identity,
    identifier_key,
    split_identifier_key,
)
from streams.identity.resolver import Owner, RefusalReason
from streams.profiles.model import MERGE_MARKER_PREFIX, REFUSED_IDENTIFIERS_LIMIT, Profile


def merge_marker(profile_id: str) -> str:
    """The id a merge is remembered under, next to event ids, so a replayed merge is a no-op."""
    return f"{MERGE_MARKER_PREFIX}{profile_id}"


def merged_into(profile: Profile) -> list[str]:
    """Ids of the profiles merged into ``profile`` (as far as its remembered ids reach)."""
    return [
        marker.removeprefix(MERGE_MARKER_PREFIX)
        for marker in profile.recent_event_ids
        if marker.startswith(MERGE_MARKER_PREFIX)
    ]


def owner_of(profile: Profile) -> Owner:
    return Owner(profile.profile_id, profile.rank)


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    """The event's identity as the profile takes it: refused identifiers left out."""
    claims: tuple[str, ...]
    """Identifier keys the profile takes for the first time and must claim."""
    refused: tuple[str, ...]
    """Identifier keys refused now because the profile is at its cap for that kind."""


def admit(
    profile: Profile, identity: Identity, caps: IdentifierCaps, owned: str | None
) -> Admission:
    """Which of an event's identifiers ``profile`` takes; ``owned`` is already its own."""
    claims: list[str] = []
    refused: list[str] = []
    dropped: dict[str, None] = {}
    taken: dict[str, int] = {}
    for kind, value in identity.identifiers():
        held = getattr(profile, IDENTIFIER_FIELDS[kind])
        if value in held:
            continue
        key = identifier_key(kind, value)
        if key in profile.refused_identifiers:
            dropped[kind] = None
        elif key != owned and len(held) + taken.get(kind, 0) >= caps.of(kind):
            refused.append(key)
            dropped[kind] = None
        else:
            taken[kind] = taken.get(kind, 0) + 1
            if key != owned:
                claims.append(key)
    if dropped:
        identity = dataclasses.replace(identity, **dropped)
    return Admission(identity, tuple(claims), tuple(refused))


def with_refused(profile: Profile, keys: tuple[str, ...], reason: RefusalReason) -> Profile:
    """``profile`` (mutated: the caller's fresh copy) remembering ``keys`` as refused."""
    refused = {**profile.refused_identifiers, **dict.fromkeys(keys, reason.value)}
    profile.refused_identifiers = dict(list(refused.items())[-REFUSED_IDENTIFIERS_LIMIT:])
    return profile


def release(profile: Profile, key: str, owner: str, reason: RefusalReason) -> Profile | None:
    """``profile`` without identifier ``key`` the identity table refused it; None: keep it.

    ``owner`` is whoever holds ``key`` in the table. When this profile has absorbed that
    owner, the refusal only raced the merge, and the identifier is rightly this profile's.
    A suppressed identifier is not remembered: the profile would hold it again.
    """
    if reason is not RefusalReason.SUPPRESSED and merge_marker(owner) in profile.recent_event_ids:
        return None
    kind, value = split_identifier_key(key)
    p = profile.clone()
    field = IDENTIFIER_FIELDS[kind]
    setattr(p, field, tuple(v for v in getattr(profile, field) if v != value))
    if reason is RefusalReason.SUPPRESSED:
        return p
    return with_refused(p, (key,), reason)


def exceeds_caps(profile: Profile, claimant_keys: tuple[str, ...], caps: IdentifierCaps) -> bool:
    """True when ``profile`` and a claimant holding ``claimant_keys`` together exceed a cap."""
    together = {*profile.identifier_keys(), *claimant_keys}
    counts = Counter(split_identifier_key(key)[0] for key in together)
    return any(count > caps.of(kind) for kind, count in counts.items())
