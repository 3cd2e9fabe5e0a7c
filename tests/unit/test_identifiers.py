"""A profile's side of the identity graph: admitting identifiers, caps, releases, messages."""

from __future__ import annotations

import pytest

from streams.events import IdentifierCaps, IdentifierKind, Identity
from streams.identity.identifiers import admit, exceeds_caps, merge_marker, release
from streams.identity.resolver import RefusalReason
from streams.profiles.model import Profile
from streams.steps import messages
from tests.unit.test_reducer import identify

CAPS = IdentifierCaps(user_ids=1, emails=2, anonymous_ids=2)


def test_new_identifiers_are_claimed_except_the_one_already_owned() -> None:
    admission = admit(Profile.new("p"), Identity("a1", "u1", "x@y.io"), CAPS, owned="user_id:u1")
    assert admission.claims == ("email:x@y.io", "anonymous_id:a1")
    assert admission.refused == ()
    assert admission.identity == Identity("a1", "u1", "x@y.io")


def test_identifiers_over_the_cap_are_refused_and_left_out() -> None:
    full = Profile("p", anonymous_ids=("a1", "a2"), user_ids=("u1",))
    admission = admit(full, Identity("a3", "u2"), CAPS, owned=None)
    assert admission.refused == ("user_id:u2", "anonymous_id:a3")
    assert admission.claims == ()
    assert admission.identity == Identity()


def test_the_owned_identifier_is_taken_even_at_the_cap() -> None:
    full = Profile("p", anonymous_ids=("a1", "a2"))
    admission = admit(full, Identity("a3"), CAPS, owned="anonymous_id:a3")
    assert admission.identity == Identity("a3")
    assert admission.claims == admission.refused == ()


def test_refused_identifiers_are_not_asked_for_again() -> None:
    profile = Profile("p", refused_identifiers={"anonymous_id:shared": "owned_by_other_profile"})
    admission = admit(profile, Identity("shared", "u1"), CAPS, owned="user_id:u1")
    assert admission.claims == admission.refused == ()
    assert admission.identity == Identity(user_id="u1")


def test_release_drops_the_identifier_and_remembers_why() -> None:
    profile = Profile("p", emails=("a@x.io", "b@x.io"))
    released = release(profile, "email:b@x.io", "p_other", RefusalReason.OWNED_BY_OTHER_PROFILE)
    assert released is not None
    assert released.emails == ("a@x.io",)
    assert released.refused_identifiers == {"email:b@x.io": "owned_by_other_profile"}
    assert profile.emails == ("a@x.io", "b@x.io")  # not mutated


def test_a_release_that_raced_a_merge_of_the_owner_is_ignored() -> None:
    profile = Profile("p", emails=("b@x.io",), recent_event_ids={merge_marker("p_other"): None})
    assert release(profile, "email:b@x.io", "p_other", RefusalReason.CAP_EXCEEDED) is None


def test_caps_of_a_merge_count_distinct_identifiers() -> None:
    profile = Profile("p", emails=("a@x.io",), anonymous_ids=("a1",))
    assert not exceeds_caps(profile, ("user_id:u", "email:a@x.io", "anonymous_id:a2"), CAPS)
    assert exceeds_caps(profile, ("anonymous_id:a2", "anonymous_id:a3"), CAPS)


CAUSE = messages.Cause("e-1", 1_700_000_000_000)
CLAIM = messages.Claim("p_1", IdentifierKind.USER_ID, ("user_id:u",), CAUSE)


@pytest.mark.parametrize(
    "message",
    [
        messages.RoutedEvent(identify(email="x@y.io"), owned="email:x@y.io"),
        messages.RoutedEvent(identify()),
        CLAIM,
        messages.Repoint(("p_2", "p_0"), "p_1", IdentifierKind.EMAIL),
        messages.HandOver("email:x@y.io", CLAIM),
        messages.Absorb(
            "p_2", Profile("p_2", emails=("x@y.io",)).to_dict(), ("email:x@y.io",), CAUSE
        ),
        messages.Release("email:x@y.io", "p_3", RefusalReason.CAP_EXCEEDED, CAUSE),
    ],
)
def test_internal_messages_round_trip(message: messages.InternalMessage) -> None:
    value, headers = messages.encode(message)
    assert messages.decode(value, headers) == message
