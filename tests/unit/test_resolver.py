"""Identity resolution rules, without Kafka."""

from __future__ import annotations

from streams.events import Event, EventKind, IdentifierKind, Identity
from streams.identity.resolver import (
    DEFAULT_BLOCKED_IDENTIFIERS,
    LinkOutcome,
    blocklist,
    decide_link,
    identifier_key,
    profile_id_for,
    resolve,
    routing_key,
    without_blocked,
)

BLOCKED = blocklist(DEFAULT_BLOCKED_IDENTIFIERS)


def event(identity: Identity) -> Event:
    return Event(EventKind.IDENTIFY, "e-1", 1, identity, {})


def test_the_strongest_identifier_routes_and_names_the_profile() -> None:
    sign_up = event(Identity(anonymous_id="a-1", email="ann@example.com"))
    assert routing_key(sign_up) == "email:ann@example.com"
    resolution = resolve(sign_up, lambda key: None)
    assert resolution.profile_id == profile_id_for("email:ann@example.com")
    assert resolution.claim_routing_key
    assert resolution.links == ("anonymous_id:a-1",)


def test_a_known_identifier_keeps_its_profile() -> None:
    login = event(Identity(anonymous_id="a-2", user_id="42", email="ann@example.com"))
    resolution = resolve(login, {"user_id:42": "p_known"}.get)
    assert resolution.profile_id == "p_known"
    assert not resolution.claim_routing_key
    assert resolution.links == ("email:ann@example.com", "anonymous_id:a-2")


def test_profile_ids_are_stable_and_carry_no_personal_data() -> None:
    key = identifier_key(IdentifierKind.EMAIL, "ann@example.com")
    assert profile_id_for(key) == profile_id_for(key)
    assert "ann" not in profile_id_for(key)
    assert profile_id_for(key) != profile_id_for("email:bob@example.com")


def test_links() -> None:
    anonymous = "anonymous_id:a-1"
    assert decide_link(anonymous, None, "p_ann") is LinkOutcome.LINKED
    assert decide_link(anonymous, "p_ann", "p_ann") is LinkOutcome.ALREADY_LINKED
    # A device that only had its own anonymous profile is adopted by whoever signs in on it.
    own = profile_id_for(anonymous)
    assert decide_link(anonymous, own, "p_ann") is LinkOutcome.ADOPTED_ANONYMOUS
    # An identifier that already belongs to someone else is never silently re-pointed.
    assert decide_link(anonymous, "p_bob", "p_ann") is LinkOutcome.REFUSED_OWNED
    assert decide_link("email:x@example.com", "p_bob", "p_ann") is LinkOutcome.REFUSED_OWNED


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
