"""Identity resolution rules, without Kafka."""

from __future__ import annotations

import pytest

from streams.events import (
    DEFAULT_BLOCKED_IDENTIFIERS,
    Event,
    EventKind,
    IdentifierKind,
    Identity,
    identifier_key,
)
from streams.identity.resolver import (
    ClaimOutcome,
    Owner,
    blocklist,
    decide_claim,
    profile_id_for,
    redacted,
    routing_key,
    without_blocked,
)

BLOCKED = blocklist(DEFAULT_BLOCKED_IDENTIFIERS)
USER = IdentifierKind.USER_ID
EMAIL = IdentifierKind.EMAIL
ANONYMOUS = IdentifierKind.ANONYMOUS_ID


def event(identity: Identity) -> Event:
    return Event(EventKind.IDENTIFY, "e-1", 1, identity, {})


def test_the_strongest_identifier_routes_and_founds_the_profile() -> None:
    sign_up = event(Identity(anonymous_id="a-1", email="ann@example.com"))
    assert routing_key(sign_up) == "email:ann@example.com"
    founded = Owner.of_key(routing_key(sign_up), 8)
    assert founded == Owner(profile_id_for("email:ann@example.com", 8), EMAIL)


def test_profile_ids_are_stable_and_carry_no_personal_data() -> None:
    key = identifier_key(EMAIL, "ann@example.com")
    assert profile_id_for(key, 8) == profile_id_for(key, 8)
    assert "ann" not in profile_id_for(key, 8)
    assert profile_id_for(key, 8) != profile_id_for("email:bob@example.com", 8)
    assert "ann" not in redacted(key)
    assert redacted(key).startswith("email:#")


def test_owners_round_trip_through_the_table() -> None:
    owner = Owner("p_abc", EMAIL)
    assert Owner.decode(owner.encode()) == owner


ANN = Owner("p_ann", USER)


@pytest.mark.parametrize(
    ("key", "owner", "claimant", "expected"),
    [
        ("anonymous_id:a-1", None, ANN, ClaimOutcome.LINKED),
        ("anonymous_id:a-1", ANN, ANN, ClaimOutcome.ALREADY_LINKED),
        # A device that only had its own anonymous profile joins whoever signs in on it.
        ("anonymous_id:a-1", Owner("p_a1", ANONYMOUS), ANN, ClaimOutcome.MERGE),
        ("anonymous_id:a-1", Owner("p_a1", ANONYMOUS), Owner("p_e", EMAIL), ClaimOutcome.MERGE),
        # A newsletter subscriber known by email only joins the user id that logs in with it.
        ("email:ann@x.io", Owner("p_e", EMAIL), ANN, ClaimOutcome.MERGE),
        # A subscriber's device used to log in: the subscriber is that user.
        ("anonymous_id:a-1", Owner("p_e", EMAIL), ANN, ClaimOutcome.MERGE),
        # Equal ranks keep what they own.
        ("anonymous_id:a-1", Owner("p_e", EMAIL), Owner("p_f", EMAIL), ClaimOutcome.REFUSED),
        # What belongs to another known person is never re-pointed.
        ("anonymous_id:a-1", Owner("p_bob", USER), ANN, ClaimOutcome.REFUSED),
        ("email:bob@x.io", Owner("p_bob", USER), ANN, ClaimOutcome.REFUSED),
        ("user_id:7", Owner("p_bob", USER), ANN, ClaimOutcome.REFUSED),
        # Never downwards: a weaker claimant does not take a stronger profile's identifier.
        ("email:ann@x.io", ANN, Owner("p_e", EMAIL), ClaimOutcome.REFUSED),
    ],
)
def test_claims(key: str, owner: Owner | None, claimant: Owner, expected: ClaimOutcome) -> None:
    assert decide_claim(key, owner, claimant) is expected


def test_block_listed_values_are_removed_case_insensitively() -> None:
    identity = Identity(anonymous_id="Undefined", user_id=" null ", email="ann@example.com")
    cleaned, removed = without_blocked(identity, BLOCKED)
    assert cleaned == Identity(email="ann@example.com")
    assert removed == (IdentifierKind.USER_ID, IdentifierKind.ANONYMOUS_ID)


def test_clean_identities_are_returned_as_they_are() -> None:
    identity = Identity(anonymous_id="a-1")
    cleaned, removed = without_blocked(identity, BLOCKED)
    assert cleaned is identity
    assert removed == ()
    everything_blocked, _ = without_blocked(Identity(email="test@test.com"), BLOCKED)
    assert everything_blocked.identifiers() == []
