"""When a profile is kept no longer: the retention rule, purely.

A profile that never got a user id or an email address (:func:`anonymous`) is behavioural
data about a visitor nobody knows; it is kept until ``anonymous_ms`` after its latest event
(``last_seen``, event time), then erased. Known profiles are kept for ``known_ms`` after
their latest event when that is set, else for as long as they exist. The worker's timers
(:mod:`streams.runtime.rechecks`) ask :func:`expires_at` when each profile is due, and the
profile step asks it again before erasing, so an event that came in between keeps it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.profiles.model import ERASED_FIELD, Erased, Forward, Profile, StoredProfile

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Retention:
    anonymous_ms: int = 90 * DAY_MS
    known_ms: int | None = None  # None: known profiles are kept
    erasure_mark_ms: int = DAY_MS
    """How long an erased profile's mark (:class:`~streams.profiles.model.Erased`) is kept:
    long enough for the erasure's unlinks to reach its identifiers in a worker running behind."""


DEFAULT_RETENTION = Retention()


def anonymous(profile: Profile) -> bool:
    """A profile nobody is known by: no user id and no email address."""
    return not profile.user_ids and not profile.emails


def expires_at(stored: StoredProfile, retention: Retention) -> int | None:
    """When ``stored`` is erased (a profile, unless another event comes first) or forgotten
    (an erased profile's mark); None: not by time (a forward, a profile kept for good)."""
    if isinstance(stored, Erased):
        return stored.at + retention.erasure_mark_ms
    if isinstance(stored, Forward):
        return None
    return _expiry(stored.last_seen, anonymous(stored), retention)


def stored_expires_at(raw: Mapping[str, Any], retention: Retention) -> int | None:
    """:func:`expires_at` of a profile table value as a dict, without building the profile
    (None for a forward)."""
    erased_at = raw.get(ERASED_FIELD)
    if erased_at is not None:
        return expires_at(Erased(int(erased_at)), retention)
    identities = raw.get("identities")
    if identities is None:
        return None
    known = bool(identities["user_ids"] or identities["emails"])
    return _expiry(raw.get("last_seen"), not known, retention)


def _expiry(last_seen: int | None, is_anonymous: bool, retention: Retention) -> int | None:
    kept = retention.anonymous_ms if is_anonymous else retention.known_ms
    if last_seen is None or kept is None:
        return None
    return last_seen + kept


def profile_hash(profile_id: str) -> str:
    """What a privacy event names a profile by: not its id, which outputs still carry, but
    a digest whoever holds the id can check it against."""
    return hashlib.blake2b(profile_id.encode(), digest_size=16).hexdigest()
