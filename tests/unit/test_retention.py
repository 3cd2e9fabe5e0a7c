"""Retention: which profiles are due, and what their expiry removes (the profile step)."""

from __future__ import annotations

import dataclasses

import orjson

from streams.events import IdentifierKind, identifier_key
from streams.identity.resolver import profile_id_for
from streams.privacy.requests import PrivacyEvent
from streams.profiles.model import Forward, Profile
from streams.profiles.retention import (
    Retention,
    anonymous,
    expires_at,
    profile_hash,
    stored_expires_at,
)
from streams.steps.messages import Forget, Out, Send, decode, encode
from streams.steps.profile import Expire
from tests.unit.test_identity_protocol import NOW, PARTITIONS, RULES, Cluster, Person
from tests.unit.test_reducer import T0, fold, identify, page_view

RETAINED = Retention(anonymous_ms=500, known_ms=None)


def test_only_profiles_without_user_id_and_email_are_anonymous() -> None:
    assert anonymous(fold([page_view(anon="a1")]))
    assert not anonymous(fold([identify(anon="a1", email="ann@example.com")]))
    assert not anonymous(fold([identify(anon=None, user="u1")]))


def test_a_profile_expires_its_retention_after_its_latest_event() -> None:
    visitor = fold([page_view(anon="a1", at=T0), page_view(anon="a1", at=T0 + 7)])
    known = fold([page_view(anon="a1", at=T0), identify(email="ann@example.com", at=T0 + 9)])
    assert expires_at(visitor, RETAINED) == T0 + 7 + 500
    assert expires_at(known, RETAINED) is None  # known profiles are kept unless told
    assert expires_at(known, Retention(500, known_ms=2_000)) == T0 + 9 + 2_000
    assert expires_at(Profile.new("p"), RETAINED) is None  # never seen: nothing to count from
    for profile in (visitor, known):
        raw = orjson.loads(profile.to_json())
        for retention in (RETAINED, Retention(500, 2_000)):
            assert stored_expires_at(raw, retention) == expires_at(profile, retention)
    assert stored_expires_at({"forward_to": "p_1", "rank": "email"}, RETAINED) is None


def expire(cluster: Cluster, profile_id: str) -> None:
    """What the worker's timer does once the profile's expiry came."""
    cluster._append(Send(Out.PROFILE, profile_id, Expire()))
    cluster.run()


def test_an_expired_anonymous_profile_and_its_identifiers_are_gone_a_known_one_stays() -> None:
    rules = dataclasses.replace(RULES, retention=RETAINED)
    cluster = Cluster(rules=rules)
    person = Person(1)
    for event in person.events(views=2):
        cluster.produce(event)
    visitor_key = identifier_key(IdentifierKind.ANONYMOUS_ID, "visitor")
    for v in range(3):
        cluster.produce(page_view(category="toys", anon="visitor", at=T0 + v))
    cluster.run()
    visitor_id = cluster.owner(visitor_key).profile_id
    assert visitor_id == profile_id_for(visitor_key, PARTITIONS)
    segments = cluster.resolve(visitor_key).segments
    assert segments  # so that its exits can be checked
    before = len(cluster.sent(Out.SEGMENT_CHANGES))

    expire(cluster, visitor_id)
    expire(cluster, person.profile_id)

    assert visitor_id.encode() not in cluster.profiles.values
    assert visitor_key.encode() not in cluster.identities.values
    exits = cluster.sent(Out.SEGMENT_CHANGES)[before:]
    assert [(s.key, s.message.segment, s.message.change) for s in exits] == [
        (visitor_id, segment, "exited") for segment in segments
    ]
    assert {s.message.cause_event_id for s in exits} == {f"expired:{T0 + 2 + 500}"}
    assert [s.message for s in cluster.sent(Out.PRIVACY_EVENTS)] == [
        PrivacyEvent.expired(profile_hash(visitor_id), T0 + 2 + 500, anonymous=True)
    ]
    # The person, known by email and user id, is kept with every identifier.
    assert {cluster.resolve(key).profile_id for key in person.keys} == {person.profile_id}


def test_a_known_profile_expires_with_every_identifier_when_profile_retention_is_set() -> None:
    rules = dataclasses.replace(RULES, retention=Retention(500, known_ms=500))
    cluster = Cluster(rules=rules)
    person = Person(2)
    for event in person.events(views=1):
        cluster.produce(event)
    cluster.run()
    assert any(isinstance(v, Forward) for v in cluster.profiles.values.values())  # merges
    expire(cluster, person.profile_id)
    assert not cluster.live_profiles()
    assert not cluster.profiles.values  # the forwards the merges left went with it
    assert not any(key.encode() in cluster.identities.values for key in person.keys)
    [expired] = [s.message for s in cluster.sent(Out.PRIVACY_EVENTS)]
    assert not expired.anonymous
    # No identifier is named in what the expiry wrote.
    assert not any(key.split(":", 1)[1] in repr(expired) for key in person.keys)


def test_a_profile_seen_again_before_its_expiry_is_kept() -> None:
    rules = dataclasses.replace(RULES, retention=Retention(anonymous_ms=NOW - T0 + 1))
    cluster = Cluster(rules=rules)
    cluster.produce(page_view(anon="visitor", at=T0))
    cluster.run()
    [profile] = cluster.live_profiles()
    expire(cluster, profile.profile_id)  # a prompt that came too early, or a stale one
    assert cluster.live_profiles() == [profile]
    assert not cluster.sent(Out.PRIVACY_EVENTS)


def test_a_forget_crosses_the_internal_topic_unchanged() -> None:
    forget = Forget(("p_0123456789abcdef01234567", "p_76543210fedcba9876543210"))
    assert decode(*encode(forget)) == forget
