"""The merge protocol across partitions, run in memory with any interleaving.

:class:`Cluster` runs the real identity and profile steps over per-partition FIFO queues
and picks which partition moves next at random, which is what several workers and
partitions do to the order in which messages of different keys are handled. A message for
the partition being handled is handled in place, as in the worker
(:class:`~streams.steps.in_place.InPlace`), through the worker's own engine
(:class:`~streams.steps.engine.Engine`),, unless the cluster is told the partition is not held
(never, or at random: partitions moving between workers). Whatever the order, every person
must end as one profile holding all their events exactly once.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, IdentifierCaps, IdentifierKind, identifier_key
from streams.identity.resolver import Owner, profile_id_for, routing_key
from streams.journeys.rules import JourneyTrigger
from streams.partitioning import key_partition
from streams.profiles.model import Forward, Profile, StoredProfile
from streams.steps.engine import DictTable, Engine
from streams.steps.in_place import Headers, InPlace
from streams.steps.messages import (
    INTERNAL,
    IdentityMerge,
    InternalMessage,
    Out,
    RoutedEvent,
    Send,
)
from streams.steps.process import Rules
from tests.unit.test_reducer import T0, email_event, identify, order, page_view

RULES = Rules.load()
NOW = T0 + 1_000
PARTITIONS = 8
ANONYMOUS = IdentifierKind.ANONYMOUS_ID


class Held(Enum):
    """Whether a worker holds the partition it sends to (when it is the one it handles)."""

    ALWAYS = "always"
    NEVER = "never"
    AT_RANDOM = "at random"


@dataclass
class Cluster:
    rules: Rules = RULES
    now: int = NOW
    """The wall clock the steps see."""
    rnd: random.Random = field(default_factory=lambda: random.Random(0))
    held: Held = Held.ALWAYS
    identities: DictTable[Owner] = field(default_factory=DictTable)
    profiles: DictTable[StoredProfile] = field(default_factory=DictTable)
    privacy: DictTable[bytes] = field(default_factory=DictTable)
    queues: dict[tuple[Out, int], deque[tuple[str, InternalMessage]]] = field(default_factory=dict)
    outputs: dict[Out, list[Send]] = field(default_factory=dict)
    handled: int = 0
    over_topics: Counter[Out] = field(default_factory=Counter)

    def produce(self, event: Event) -> None:
        """An event on its input topic, in its identifier's partition (the producer API's)."""
        self._append(Send(Out.IDENTITY, routing_key(event), RoutedEvent(event)))

    def _append(self, send: Send, headers: Headers | None = None) -> None:
        if send.topic in INTERNAL:
            partition = key_partition(send.key.encode(), PARTITIONS)
            self.over_topics[send.topic] += 1
            self.queues.setdefault((send.topic, partition), deque()).append(
                (send.key, send.message)
            )
        else:
            self.outputs.setdefault(send.topic, []).append(send)

    def run(self, steps: int | None = None) -> None:
        """Handle ``steps`` messages (None: until nothing is left), partitions at random."""
        done = 0
        while steps is None or done < steps:
            ready = [where for where, queue in self.queues.items() if queue]
            if not ready:
                return
            topic, partition = self.rnd.choice(ready)
            key, message = self.queues[topic, partition].popleft()
            in_place = InPlace(PARTITIONS, self._handle, self._append, self._holds, _raise)
            in_place.run(Send(topic, key, message), {}, partition)
            done += 1

    def _holds(self, topic: Out, partition: int) -> bool:
        if self.held is Held.AT_RANDOM:
            return self.rnd.random() < 0.5
        return self.held is Held.ALWAYS

    def _handle(self, send: Send, headers: Headers, partition: int) -> tuple[Send, ...]:
        self.handled += 1
        assert self.handled < 100_000, "the protocol does not settle"
        engine = Engine(
            PARTITIONS,
            self.rules,
            self.identities,
            self.profiles,
            clock=lambda: self.now,
            privacy=self.privacy,
        )
        return engine.handle(send, headers, partition)

    # -- reading the end state ----------------------------------------------------------

    def owner(self, key: str) -> Owner:
        return self.identities.values[key.encode()]

    def resolve(self, key: str) -> Profile:
        """The live profile an identifier ends at, following forwards."""
        stored = self.profiles.values[self.owner(key).profile_id.encode()]
        while isinstance(stored, Forward):
            stored = self.profiles.values[stored.into.encode()]
        assert isinstance(stored, Profile)
        return stored

    def live_profiles(self) -> list[Profile]:
        return [p for p in self.profiles.values.values() if isinstance(p, Profile)]

    def sent(self, topic: Out) -> list[Send]:
        return self.outputs.get(topic, [])


@dataclass(frozen=True)
class Person:
    """One customer: a user id, an email address and three devices."""

    n: int

    @property
    def user(self) -> str:
        return f"u{self.n}"

    @property
    def email(self) -> str:
        return f"person{self.n}@example.com"

    @property
    def devices(self) -> list[str]:
        return [f"a{self.n}-{d}" for d in range(3)]

    @property
    def keys(self) -> set[str]:
        return {
            identifier_key(IdentifierKind.USER_ID, self.user),
            identifier_key(IdentifierKind.EMAIL, self.email),
            *(identifier_key(IdentifierKind.ANONYMOUS_ID, a) for a in self.devices),
        }

    @property
    def profile_id(self) -> str:
        return profile_id_for(identifier_key(IdentifierKind.USER_ID, self.user), PARTITIONS)

    def events(self, views: int) -> list[Event]:
        """Browsing on every device, a sign-up on the first, a login with email on the
        second and one without on the third, a mail opened (known by email only) and an
        order (known by user id only)."""
        a0, a1, a2 = self.devices
        found = [
            page_view(category="toys", anon=device, event_id=f"{device}-v{v}", at=T0 + v)
            for device in self.devices
            for v in range(views)
        ]
        return [
            *found,
            identify(
                newsletter="subscribed",
                consent={"email_marketing": True},
                traits={"first_name": f"P{self.n}"},
                anon=a0,
                email=self.email,
                event_id=f"{self.n}-signup",
                at=T0 + 100,
            ),
            identify(anon=a1, user=self.user, email=self.email, event_id=f"{self.n}-login-1"),
            identify(anon=a2, user=self.user, event_id=f"{self.n}-login-2", at=T0 + 200),
            email_event("opened", anon=None, email=self.email, event_id=f"{self.n}-open"),
            order(anon=None, user=self.user, total=25.0, event_id=f"{self.n}-order"),
        ]


def _raise(send: Send, headers: Headers, partition: int, exc: Exception) -> None:
    raise exc


def _run(events: list[Event], seed: int, rules: Rules = RULES, held: Held = Held.ALWAYS) -> Cluster:
    cluster = Cluster(rules=rules, rnd=random.Random(seed), held=held)
    for event in events:
        cluster.produce(event)
        cluster.run(steps=cluster.rnd.randint(0, 4))
    cluster.run()
    return cluster


def _welcome_triggers(cluster: Cluster) -> Counter[str]:
    """Welcome mails by address: each person must get at most one."""
    triggers = [send.message for send in cluster.sent(Out.JOURNEYS)]
    return Counter(
        t.email for t in triggers if isinstance(t, JourneyTrigger) and t.journey == "welcome"
    )


@pytest.mark.parametrize("held", list(Held), ids=lambda held: held.value)
@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
    st.integers(0, 2**32 - 1),
)
def test_any_order_ends_with_one_profile_per_person(
    held: Held, people: int, views: int, shuffle: random.Random, seed: int
) -> None:
    persons = [Person(n) for n in range(people)]
    events = [e for person in persons for e in person.events(views)]
    shuffle.shuffle(events)
    cluster = _run(events, seed, held=held)

    for person in persons:
        profile = cluster.resolve(identifier_key(IdentifierKind.EMAIL, person.email))
        assert profile.profile_id == person.profile_id
        for key in person.keys:
            assert cluster.owner(key).profile_id == person.profile_id, key
        assert set(profile.identifier_keys()) == person.keys
        assert profile.page_views == 3 * views
        assert profile.orders_placed == 1
        assert profile.revenue == 25.0
        assert profile.email_counts["opened"] == 1
        assert profile.newsletter == "subscribed"
        assert profile.traits["first_name"].value == f"P{person.n}"
        assert "newsletter_subscriber" in profile.segments
        assert not profile.refused_identifiers
    # Nothing lost, nothing counted twice: the live profiles are exactly the people.
    assert sorted(p.profile_id for p in cluster.live_profiles()) == sorted(
        person.profile_id for person in persons
    )
    assert all(count == 1 for count in _welcome_triggers(cluster).values())
    merges = [send.message for send in cluster.sent(Out.IDENTITY_MERGES)]
    assert all(isinstance(m, IdentityMerge) for m in merges)
    merged_away = [m.from_profile_id for m in merges]
    assert len(merged_away) == len(set(merged_away))


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 2**32 - 1))
def test_replayed_events_change_nothing(shuffle: random.Random, seed: int) -> None:
    person = Person(0)
    events = person.events(2)
    replayed = events + [shuffle.choice(events) for _ in range(5)]
    shuffle.shuffle(replayed)
    once, twice = _run(events, seed), _run(replayed, seed)
    a = once.resolve(identifier_key(IdentifierKind.USER_ID, person.user))
    b = twice.resolve(identifier_key(IdentifierKind.USER_ID, person.user))
    assert (a.page_views, a.orders_placed, a.email_counts) == (
        b.page_views,
        b.orders_placed,
        b.email_counts,
    )


def test_segment_changes_of_a_merge_are_emitted_once_and_in_sequence() -> None:
    person = Person(0)
    cluster = _run(person.events(1), seed=7)
    changes = [s.message for s in cluster.sent(Out.SEGMENT_CHANGES)]
    by_profile: dict[str, list[int]] = {}
    for change in changes:
        by_profile.setdefault(change.profile_id, []).append(change.sequence)
    for sequences in by_profile.values():
        assert sequences == sorted(set(sequences))
    # A merged-away profile ends in no segment; the surviving one is a subscriber.
    membership: dict[tuple[str, str], str] = {}
    for change in changes:
        membership[change.profile_id, change.segment] = change.change
    for (profile_id, segment), last in membership.items():
        if profile_id != person.profile_id:
            assert last == "exited", (profile_id, segment)
    assert membership[person.profile_id, "newsletter_subscriber"] == "entered"


def test_a_merge_storm_respects_the_anonymous_id_cap() -> None:
    caps = IdentifierCaps(user_ids=1, emails=5, anonymous_ids=10)
    rules = Rules(RULES.segments, RULES.journeys, caps=caps)
    devices = [f"d{i}" for i in range(25)]
    views = [page_view(anon=d, event_id=f"{d}-v") for d in devices]
    logins = [identify(anon=d, user="u-storm", event_id=f"{d}-login") for d in devices]
    cluster = _run(views + logins, seed=3, rules=rules)

    user = cluster.resolve("user_id:u-storm")
    assert len(user.anonymous_ids) == caps.anonymous_ids
    assert len(user.refused_identifiers) == len(devices) - caps.anonymous_ids
    assert set(user.refused_identifiers.values()) == {"cap_exceeded"}
    # The refused devices keep their own profiles; no page view is lost or doubled.
    assert sum(p.page_views for p in cluster.live_profiles()) == len(devices)
    assert user.page_views == caps.anonymous_ids
    for device in devices:
        owner = cluster.owner(f"anonymous_id:{device}").profile_id
        assert (owner == user.profile_id) == (device in user.anonymous_ids)


def test_a_merge_that_would_exceed_a_cap_is_refused_and_both_profiles_stay() -> None:
    caps = IdentifierCaps(user_ids=1, emails=5, anonymous_ids=2)
    rules = Rules(RULES.segments, RULES.journeys, caps=caps)
    subscriber = [
        identify(anon=d, email="sub@example.com", newsletter="subscribed", event_id=f"s-{d}")
        for d in ("s1", "s2")
    ]
    user = [identify(anon=d, user="u-9", event_id=f"u-{d}") for d in ("u1", "u2")]
    login = identify(anon=None, user="u-9", email="sub@example.com", event_id="login")
    cluster = _run([*subscriber, *user, login], seed=1, rules=rules)

    by_email = cluster.resolve("email:sub@example.com")
    by_user = cluster.resolve("user_id:u-9")
    assert by_email.profile_id != by_user.profile_id
    assert by_user.refused_identifiers == {"email:sub@example.com": "cap_exceeded"}
    assert "sub@example.com" not in by_user.emails
    assert not cluster.sent(Out.IDENTITY_MERGES)


def test_two_user_ids_on_one_device_stay_two_people() -> None:
    first = identify(anon="shared", user="ann", event_id="ann-login")
    second = identify(anon="shared", user="bob", event_id="bob-login")
    cluster = _run([first, second, page_view(anon="shared", event_id="v")], seed=5)
    ann, bob = cluster.resolve("user_id:ann"), cluster.resolve("user_id:bob")
    assert ann.profile_id != bob.profile_id
    assert bob.refused_identifiers == {"anonymous_id:shared": "owned_by_other_profile"}
    assert cluster.resolve("anonymous_id:shared").profile_id == ann.profile_id
    assert ann.page_views == 1


def test_a_new_persons_events_are_handled_in_their_partition_from_start_to_end() -> None:
    person = Person(0)
    device = person.devices[0]
    alone = [e for e in person.events(3) if e.identity.identifiers() == [(ANONYMOUS, device)]]
    in_place = _run(alone, seed=1)
    assert in_place.over_topics == Counter({Out.IDENTITY: len(alone)})  # the inputs only
    over_topics = _run(alone, seed=1, held=Held.NEVER)
    assert over_topics.over_topics[Out.PROFILE] >= len(alone)
    assert in_place.resolve(routing_key(alone[0])).page_views == 3


@pytest.mark.parametrize("held", list(Held), ids=lambda held: held.value)
@pytest.mark.parametrize("seed", range(40))
def test_a_device_claimed_again_while_its_merge_is_under_way(seed: int, held: Held) -> None:
    # The second claim can reach the device's first profile after it merged away and
    # before the identity table heard where to: it is asked again until the table knows.
    events = [
        page_view(anon="d", event_id="view"),
        identify(anon="d", email="e@example.com", event_id="sign-up"),
        identify(anon="d", user="u", event_id="login"),
    ]
    cluster = _run(events, seed, held=held)
    profile = cluster.resolve("user_id:u")
    assert set(profile.identifier_keys()) >= {"anonymous_id:d", "user_id:u"}
    assert sum(p.page_views for p in cluster.live_profiles()) == 1
