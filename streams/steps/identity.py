"""The identity step for one message, purely: ``identity_step(owner, key, message, partitions)``.

The Faust shell reads the owner of ``key`` from the identity table, calls the step,
stores what it says and delivers what it lists; a test can run the same steps in memory.
``partitions`` is the number of partitions, which a new profile's id depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.identity.resolver import ClaimOutcome, Owner, RefusalReason, decide_claim
from streams.steps.messages import (
    Claim,
    Erase,
    HandOver,
    InternalMessage,
    Out,
    Release,
    Repoint,
    RoutedEvent,
    Send,
    Unlink,
)
from streams.steps.privacy import completed


@dataclass(frozen=True, slots=True)
class IdentityStep:
    store: Owner | None = None
    """The key's new owner, or None to leave the table as it is."""
    delete: bool = False
    """Remove the key from the table (it belonged to an erased profile)."""
    suppress: bool = False
    """Mark the identifier suppressed (its erased profile's request said so)."""
    erased_at: int | None = None
    """Mark the identifier erased at this time: its events of before are dropped."""
    sends: tuple[Send, ...] = ()
    claim_outcome: ClaimOutcome | None = None
    refused: RefusalReason | None = None


def identity_step(
    owner: Owner | None,
    key: str,
    message: InternalMessage,
    partitions: int,
    *,
    suppressed: bool = False,
) -> IdentityStep:
    """What to store and send for ``message`` about identifier ``key``, owned by ``owner``;
    ``suppressed``: a privacy request suppressed ``key`` (a claim of it is refused)."""
    if isinstance(message, RoutedEvent):
        return _route(owner, key, message, partitions)
    if isinstance(message, Claim):
        if suppressed:
            reason = RefusalReason.SUPPRESSED
            holder = message.profile_id if owner is None else owner.profile_id
            release = Release(key, holder, reason, message.cause)
            return IdentityStep(
                sends=(Send(Out.PROFILE, message.profile_id, release),), refused=reason
            )
        return _claim(owner, key, message)
    if isinstance(message, Erase):
        # Whoever owns the identifier is erased; nobody: the request is done.
        if owner is None:
            return IdentityStep(sends=(completed(message, False),))
        return IdentityStep(sends=(Send(Out.PROFILE, owner.profile_id, message),))
    if isinstance(message, Unlink):
        owned = owner is not None and owner.profile_id in message.from_profile_ids
        # Unowned, it is marked all the same: replayed after a crash whose tombstone reached
        # the changelog and whose mark did not, the unlink finds no owner.
        erased_at = message.erased_at if owned or owner is None else None
        return IdentityStep(delete=owned, suppress=message.suppress, erased_at=erased_at)
    if not isinstance(message, Repoint):
        raise ValueError(f"a {message.command} command does not belong on the identity topic")
    if owner is not None and owner.profile_id in message.from_profile_ids:
        return IdentityStep(store=message.new_owner)
    return IdentityStep()


def _route(owner: Owner | None, key: str, message: RoutedEvent, partitions: int) -> IdentityStep:
    """Send an event to the profile owning the key it is routed under; unknown: founds one."""
    found = owner or Owner.of_key(key, partitions)
    routed = RoutedEvent(message.event, owned=key)
    return IdentityStep(
        store=None if owner is not None else found,
        sends=(Send(Out.PROFILE, found.profile_id, routed),),
    )


def _claim(owner: Owner | None, key: str, claim: Claim) -> IdentityStep:
    outcome = decide_claim(key, owner, claim.claimant)
    if outcome is ClaimOutcome.LINKED:
        return IdentityStep(store=claim.claimant, claim_outcome=outcome)
    if outcome is ClaimOutcome.ALREADY_LINKED:
        return IdentityStep(claim_outcome=outcome)
    assert owner is not None
    if outcome is ClaimOutcome.MERGE:
        # The weaker owner decides (it knows its identifiers, for the caps) and, when it
        # hands over, re-points this identifier together with all its others.
        hand_over = HandOver(key, claim)
        return IdentityStep(
            sends=(Send(Out.PROFILE, owner.profile_id, hand_over),), claim_outcome=outcome
        )
    reason = RefusalReason.OWNED_BY_OTHER_PROFILE
    release = Release(key, owner.profile_id, reason, claim.cause)
    return IdentityStep(
        sends=(Send(Out.PROFILE, claim.profile_id, release),),
        claim_outcome=outcome,
        refused=reason,
    )
