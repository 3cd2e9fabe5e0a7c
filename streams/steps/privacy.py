"""The privacy steps, purely: requests opened and closed, profiles erased.

A request (:class:`~streams.steps.messages.Request`, keyed by its id) is opened by
:func:`request_step` over the privacy table: its status is kept there under its id,
suppression marks under the salted hash of the identifier, both in the identifier's
partition. An erasure goes from the identifier (the identity step asks the table who owns
it) to the profile (:func:`erase_profile`), which goes with everything pointing to it:
its identifiers (``Unlink``), the forwards merges left (``Forget``). Then
:class:`~streams.steps.messages.Completed` closes the request, once: its status says
whether it was closed already, so a replay after a crash, which erases again, emits no second
record.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.identity.identifiers import merged_into
from streams.identity.resolver import profile_id_for
from streams.journeys import flow
from streams.privacy.requests import (
    COMPLETED_EVENT_TYPES,
    PrivacyEvent,
    RequestStatus,
    Status,
    identifier_hash,
    suppression_key,
)
from streams.profiles.model import Profile
from streams.steps import process
from streams.steps.messages import Completed, Erase, Forget, Out, Request, Send, Unlink

#: The value of a suppression mark in the privacy table (its key is all it says).
SUPPRESSED = b"1"


def erasure_cause(request_id: str) -> str:
    """What the segment exits and journey exits of an erasure name as their cause."""
    return f"erasure:{request_id}"


@dataclass(frozen=True, slots=True)
class PrivacyStep:
    writes: tuple[tuple[bytes, bytes | None], ...] = ()
    """Privacy-table keys to set (None: delete), in the partition being handled."""
    sends: tuple[Send, ...] = ()
    opened: RequestStatus | None = None
    closed: RequestStatus | None = None
    """For metrics: the request opened or closed by this step."""


def request_step(
    stored: bytes | None, message: Request | Completed, salt: str, now_ms: int
) -> PrivacyStep:
    """Open request ``message`` (stored: its status, if any) or close it."""
    if isinstance(message, Completed):
        return _close(stored, message, now_ms)
    status = RequestStatus(
        message.request_id,
        message.type,
        identifier_hash(salt, message.identifier),
        Status.RECEIVED,
        message.received_at,
    )
    mark = suppression_key(salt, message.identifier)
    writes: list[tuple[bytes, bytes | None]] = []
    # Opened before (stored), this is a replay after a crash: the status stays, but what the
    # request did is done again, since a crashed batch's writes may have reached some tables'
    # changelogs and not others. Erasing again is harmless, and the stored status tells
    # whether the completion record went out already (:func:`_close`).
    if stored is None:
        writes.append((message.request_id.encode(), status.encode()))
    if message.type.suppresses:
        writes.append((mark, SUPPRESSED))
    elif not message.type.erases:  # unsuppress
        writes.append((mark, None))
    if message.type.erases:
        erase = Erase(message.request_id, message.received_at, message.type.suppresses)
        sends: tuple[Send, ...] = (Send(Out.IDENTITY, message.identifier, erase),)
    else:
        sends = (Send(Out.IDENTITY, message.request_id, Completed(message.request_id, False)),)
    return PrivacyStep(
        writes=tuple(writes), sends=sends, opened=status if stored is None else None
    )


def _close(stored: bytes | None, message: Completed, now_ms: int) -> PrivacyStep:
    if stored is None:
        return PrivacyStep()  # no such request opened here
    status = RequestStatus.decode(stored)
    if status.status is Status.COMPLETED:
        return PrivacyStep()  # closed before: a replay
    completed_at = max(now_ms, status.received_at)
    closed = RequestStatus(
        status.request_id,
        status.type,
        status.identifier_hash,
        Status.COMPLETED,
        status.received_at,
        completed_at,
        message.profile_found,
    )
    record = PrivacyEvent(
        COMPLETED_EVENT_TYPES[status.type],
        completed_at,
        message.profile_found,
        request_id=status.request_id,
        request_type=status.type,
        received_at=status.received_at,
    )
    return PrivacyStep(
        writes=((status.request_id.encode(), closed.encode()),),
        sends=(Send(Out.PRIVACY_EVENTS, status.request_id, record),),
        closed=closed,
    )


def completed(message: Erase, profile_found: bool) -> Send:
    """What tells the request it is done."""
    return Send(Out.IDENTITY, message.request_id, Completed(message.request_id, profile_found))


def erase_profile(
    profile: Profile,
    cause: str,
    at: int,
    rules: process.Rules,
    partitions: int,
    *,
    suppress: bool = False,
    on_request: bool = False,
) -> tuple[Send, ...]:
    """What erasing ``profile`` sends, for a request or an expiry (``cause``, at ``at``): an
    exit of each segment it is in and of each journey it is in (their records name only the
    profile id, which goes with it), the unlinking of its identifiers (``suppress``: and
    their suppression; ``on_request``: and a mark of the erasure time, so that their events
    of before are not applied again) and the forgetting of the forwards of profiles merged
    into it. An expiry needs no mark: an event of before it finds the profile expired again.

    A merged profile is found by its merge marker or, once the marker has left the bounded
    list of remembered ids, as the profile one of the identifiers founded: every profile
    merged in was founded by an identifier that came along.
    """
    key = profile.profile_id
    exits = process.hand_over(profile, cause, at)
    book = flow.Book.from_dict(profile.journey_flows)
    journeys = flow.erase(rules.flows, book, profile, cause, at)
    identifiers = profile.identifier_keys()
    founded = (profile_id_for(identifier, partitions) for identifier in identifiers)
    erased = tuple(dict.fromkeys([key, *merged_into(profile), *founded]))
    unlink = Unlink(erased, suppress, at if on_request else None)
    forget = Forget(erased)
    return (
        *(Send(Out.SEGMENT_CHANGES, key, change) for change in exits),
        *(Send(Out.JOURNEY_EVENTS, key, event) for event in journeys.events),
        *(Send(Out.IDENTITY, identifier, unlink) for identifier in identifiers),
        *(Send(Out.PROFILE, merged, forget) for merged in erased[1:]),
    )
