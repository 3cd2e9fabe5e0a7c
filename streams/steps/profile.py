"""The profile step for one message, purely: ``profile_step(stored, key, message, ...)``.

A profile's partition receives events and the merge commands of
:mod:`streams.steps.messages`. A profile merged into another leaves a
:class:`~streams.profiles.model.Forward` behind, and everything that still arrives for it
is passed on, so events and merges that race each other end up in the same place.

The Faust shell reads the stored value, calls the step, hands back what it lists and
stores what it says; a test can run the same steps in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.identity.identifiers import exceeds_caps, merged_into, owner_of
from streams.identity.resolver import RefusalReason
from streams.privacy.requests import PrivacyEvent
from streams.profiles.model import Erased, Forward, Profile, StoredProfile
from streams.profiles.retention import anonymous, expires_at, profile_hash
from streams.steps import process
from streams.steps.messages import (
    Absorb,
    Cause,
    Claim,
    Completed,
    Erase,
    Forget,
    HandOver,
    IdentityMerge,
    InternalMessage,
    Out,
    Release,
    Repoint,
    Request,
    RoutedEvent,
    Send,
    Unlink,
)
from streams.steps.privacy import completed, erase_profile, erasure_cause

Stored = StoredProfile | None
Live = Profile | Forward | None
"""What the steps of a message to a profile see: an erased profile's mark is no profile."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """The worker's own message: the profile's recheck time ``at`` has come
    (:mod:`streams.runtime.recheck_schedule`). Handled in place only, never on a topic."""

    at: int


@dataclass(frozen=True, slots=True)
class Backfill:
    """The worker's own message: the profile was stored under other definitions; evaluate it
    now (:func:`streams.steps.process.backfill`). Handled in place only, never on a topic."""


@dataclass(frozen=True, slots=True)
class Expire:
    """The worker's own message: the profile's retention (:mod:`streams.profiles.retention`)
    may have run out. Handled in place only, never on a topic."""


EXPIRED_CAUSE_PREFIX = "expired:"


@dataclass(frozen=True, slots=True)
class ProfileStep:
    store: StoredProfile | None = None
    """The key's new value, or None to leave the table as it is."""
    delete: bool = False
    """Remove the key from the table (a tombstone on its changelog): expired, or forgotten."""
    sends: tuple[Send, ...] = ()
    outcome: process.Outcome | None = None
    """What the core decided, when it ran (for metrics); ``outcome.duplicate``: a replay."""
    refused: tuple[RefusalReason, ...] = ()
    forwarded: bool = False
    dropped_as_erased: bool = False
    """An event of before the profile's erasure, dropped."""


def profile_step(
    stored: Stored,
    key: str,
    message: InternalMessage | Recheck | Backfill | Expire,
    rules: process.Rules,
    now_ms: int,
    *,
    partitions: int,
) -> ProfileStep:
    """What to store and send for ``message`` to profile ``key``, stored as ``stored``;
    ``partitions``: the number of partitions, which profile ids depend on."""
    if isinstance(message, Recheck):
        return _recheck(stored, message, rules)
    if isinstance(message, Backfill):
        return _backfill(stored, rules, now_ms)
    if isinstance(message, Expire):
        return expire_profile(stored, rules, now_ms, partitions)
    if isinstance(message, Claim | Repoint | Unlink | Request | Completed):
        raise ValueError(f"a {message.command} command does not belong on the profile topic")
    if isinstance(stored, Erased):
        if isinstance(message, RoutedEvent) and message.event.occurred_at <= stored.at:
            return ProfileStep(dropped_as_erased=True)
        stored = None  # anything later finds no profile: an event founds a new one
    if isinstance(message, HandOver):
        return _hand_over(stored, key, message, rules)
    if isinstance(message, Erase):
        return _erase(stored, message, rules, partitions)
    if isinstance(message, Forget):
        return ProfileStep(delete=isinstance(stored, Forward) and stored.into in message.erased)
    if isinstance(stored, Forward):
        return _forward(stored, key, message)
    if isinstance(message, RoutedEvent):
        return _fold(stored, key, message, rules, now_ms)
    if isinstance(message, Absorb):
        return _absorb(stored, key, message, rules, now_ms)
    return _release(stored, message, rules, now_ms)


def _erase(stored: Live, message: Erase, rules: process.Rules, partitions: int) -> ProfileStep:
    """Erase the profile, or the forward leading to it and then the profile."""
    if stored is None:
        return ProfileStep(sends=(completed(message, False),))
    # Marked erased, not deleted: see Erased.
    erased = Erased(message.received_at)
    if isinstance(stored, Forward):
        return ProfileStep(store=erased, sends=(Send(Out.PROFILE, stored.into, message),))
    erasure = erase_profile(
        stored,
        erasure_cause(message.request_id),
        message.received_at,
        rules,
        partitions,
        suppress=message.suppress,
        on_request=True,
    )
    return ProfileStep(store=erased, sends=(*erasure, completed(message, True)))


def _forward(forward: Forward, key: str, message: RoutedEvent | Absorb | Release) -> ProfileStep:
    """Pass a message for a merged-away profile on, and re-point what still points here.

    An identifier can still point here when re-points raced (a profile merged into this one
    while this one was merged on); the first event routed through it, or the late merge
    itself, corrects the table.
    """
    stale: list[str] = []
    if isinstance(message, RoutedEvent):
        stale = [message.owned] if message.owned else []
        # The routing key belongs to this profile, not to the receiver.
        message = RoutedEvent(message.event)
    elif isinstance(message, Absorb):
        stale = Profile.from_dict(message.profile).identifier_keys()
    repoint = Repoint((key,), forward.into, forward.rank)
    return ProfileStep(
        sends=(
            Send(Out.PROFILE, forward.into, message),
            *(Send(Out.IDENTITY, identifier, repoint) for identifier in stale),
        ),
        forwarded=True,
    )


def _fold(
    profile: Profile | None, key: str, message: RoutedEvent, rules: process.Rules, now_ms: int
) -> ProfileStep:
    event = message.event
    outcome = process.process(profile, key, event, rules, now_ms, owned=message.owned)
    return _outputs(outcome, Cause(event.event_id, event.occurred_at))


def _recheck(stored: Stored, message: Recheck, rules: process.Rules) -> ProfileStep:
    # A profile merged away since its recheck was scheduled has nothing left to evaluate.
    if not isinstance(stored, Profile):
        return ProfileStep()
    outcome = process.recheck(stored, message.at, rules)
    return _outputs(outcome, Cause(process.recheck_cause(message.at), message.at))


def _backfill(stored: Stored, rules: process.Rules, now_ms: int) -> ProfileStep:
    if not isinstance(stored, Profile):  # merged away since it was read
        return ProfileStep()
    outcome = process.backfill(stored, rules, now_ms)
    return _outputs(outcome, Cause(process.backfill_cause(rules), now_ms))


def expire_profile(
    stored: Stored, rules: process.Rules, now_ms: int, partitions: int
) -> ProfileStep:
    """Erase a profile whose retention ran out by ``now_ms`` as a privacy request erases one
    (:func:`streams.steps.privacy.erase_profile`), closed by an ``expired`` privacy event
    naming no one; forget an erased profile's mark whose time ran out. Anything else:
    nothing."""
    if stored is None or isinstance(stored, Forward):
        return ProfileStep()
    due = expires_at(stored, rules.retention)
    if due is None or due > now_ms:
        return ProfileStep()  # seen again since it was scheduled, or a stale prompt
    if isinstance(stored, Erased):
        return ProfileStep(delete=True)
    key = stored.profile_id
    expired = PrivacyEvent.expired(profile_hash(key), due, anonymous(stored))
    erasure = erase_profile(stored, f"{EXPIRED_CAUSE_PREFIX}{due}", due, rules, partitions)
    return ProfileStep(delete=True, sends=(*erasure, Send(Out.PRIVACY_EVENTS, key, expired)))


def _hand_over(stored: Live, key: str, message: HandOver, rules: process.Rules) -> ProfileStep:
    """This weaker profile is the same person as the claimant: merge into it, or refuse."""
    claim = message.claim
    if isinstance(stored, Forward):
        if stored.into == claim.profile_id:
            return ProfileStep()
        # Merged elsewhere first; the claim is asked again until the identity table knows
        # where the identifier went. The re-point telling it may still be on its way from
        # another partition: the question takes its turn behind it on the topic.
        return ProfileStep(sends=(Send(Out.IDENTITY, message.key, claim, waits_its_turn=True),))
    profile = stored or Profile.new(key)
    if exceeds_caps(profile, claim.identifiers, rules.caps):
        reason = RefusalReason.CAP_EXCEEDED
        release = Release(message.key, key, reason, claim.cause)
        return ProfileStep(sends=(Send(Out.PROFILE, claim.profile_id, release),), refused=(reason,))
    cause = claim.cause
    exits = process.hand_over(profile, cause.event_id, cause.occurred_at)
    identifiers = tuple(dict.fromkeys([message.key, *profile.identifier_keys()]))
    absorb = Absorb(key, profile.to_dict(), identifiers, cause)
    return ProfileStep(
        store=Forward(claim.profile_id, claim.rank),
        sends=(
            *(Send(Out.SEGMENT_CHANGES, key, change) for change in exits),
            Send(Out.PROFILE, claim.profile_id, absorb),
        ),
    )


def _absorb(
    profile: Profile | None, key: str, message: Absorb, rules: process.Rules, now_ms: int
) -> ProfileStep:
    other = Profile.from_dict(message.profile)
    if profile is None:
        return _absorbed_by_erased(key, other, message)
    cause = message.cause
    outcome = process.absorb(profile, key, other, cause.event_id, cause.occurred_at, rules, now_ms)
    step = _outputs(outcome, cause)
    # Re-pointed only now, so events of these identifiers reach this profile after the
    # state they add to (a replay too: it must be recognised). Repeated on a replayed merge.
    # Whichever profile merged into this one (directly or along a chain) still owns an
    # identifier, it is this profile's now.
    merged_away = tuple(dict.fromkeys([message.from_profile_id, *merged_into(outcome.profile)]))
    repoint = Repoint(merged_away, key, owner_of(outcome.profile).rank)
    repoints = tuple(Send(Out.IDENTITY, identifier, repoint) for identifier in message.identifiers)
    if outcome.duplicate:
        return ProfileStep(sends=repoints, outcome=outcome)
    merge = IdentityMerge(other.profile_id, key, tuple(other.identifier_keys()), cause)
    return ProfileStep(
        store=step.store,
        sends=(*step.sends, Send(Out.IDENTITY_MERGES, key, merge), *repoints),
        outcome=outcome,
        refused=step.refused,
    )


def _absorbed_by_erased(key: str, other: Profile, message: Absorb) -> ProfileStep:
    """A merge into a profile erased while it was on its way: the merging profile, the same
    person's, goes too: its forward here and its identifiers. (A profile that asks for a
    merge exists until it is merged on, when it leaves a forward, or erased.)"""
    merged_away = (message.from_profile_id, *merged_into(other))
    unlink = Unlink(merged_away, False)
    forget = Forget((key, *merged_away))
    return ProfileStep(
        sends=(
            *(Send(Out.IDENTITY, identifier, unlink) for identifier in message.identifiers),
            *(Send(Out.PROFILE, merged, forget) for merged in merged_away),
        )
    )


def _release(
    profile: Profile | None, message: Release, rules: process.Rules, now_ms: int
) -> ProfileStep:
    if profile is None:
        return ProfileStep()
    cause = message.cause
    outcome = process.release_identifier(
        profile,
        message.key,
        message.owner,
        message.reason,
        cause.event_id,
        cause.occurred_at,
        rules,
        now_ms,
    )
    return _outputs(outcome, cause)


def _outputs(outcome: process.Outcome, cause: Cause) -> ProfileStep:
    if outcome.duplicate:
        return ProfileStep(outcome=outcome)
    profile = outcome.profile
    key = profile.profile_id
    sends = [
        *(Send(Out.SEGMENT_CHANGES, key, change) for change in outcome.segment_changes),
        *(Send(Out.JOURNEYS, key, trigger) for trigger in outcome.triggers),
        *(Send(Out.JOURNEY_EVENTS, key, event) for event in outcome.journey_events),
    ]
    if outcome.claims:
        owner = owner_of(profile)
        claim = Claim(owner.profile_id, owner.rank, tuple(profile.identifier_keys()), cause)
        sends.extend(Send(Out.IDENTITY, claimed, claim) for claimed in outcome.claims)
    return ProfileStep(
        store=profile,
        sends=tuple(sends),
        outcome=outcome,
        refused=(RefusalReason.CAP_EXCEEDED,) * len(outcome.refused),
    )
