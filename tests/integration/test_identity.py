"""Identity resolution end to end: real workers, 8 partitions, merges across partitions.

Each test produces the events of a few people, in an order chosen to make identifiers of
one person meet late, and checks every person ends as one profile whose totals are
computed from the produced events.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.codec import Codec
from streams.events import EventKind
from streams.identity.resolver import profile_id_for
from streams.runtime.broker import EmbeddedBroker

from .conftest import PARTITIONS, Topics, Worker, wait_until, worker_env
from .test_pipeline import now_ms, page_view, sign_up

SETTLE_S = 45


def login(anonymous_id: str | None, user_id: str, email: str | None = None) -> dict[str, Any]:
    identity = {"anonymous_id": anonymous_id, "user_id": user_id, "email": email}
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {k: v for k, v in identity.items() if v},
    }


def email_opened(email: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"email": email},
        "campaign_id": "spring",
        "message_id": uuid.uuid4().hex,
        "action": "opened",
    }


def order_placed(user_id: str, total: float) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"user_id": user_id},
        "order_id": uuid.uuid4().hex,
        "status": "placed",
        "total": total,
        "currency": "EUR",
        "items": [],
    }


@dataclass
class Person:
    """A customer on two devices who signs up on one, logs in on the other (with the
    email address as a trait), opens mails known by email only and orders by user id."""

    tag: str
    views_per_device: int = 2

    @property
    def devices(self) -> list[str]:
        return [f"{self.tag}-phone", f"{self.tag}-laptop"]

    @property
    def email(self) -> str:
        return f"{self.tag}@example.com"

    @property
    def user_id(self) -> str:
        return f"user-{self.tag}"

    @property
    def profile_id(self) -> str:
        return profile_id_for(f"user_id:{self.user_id}", PARTITIONS)

    def events(self) -> list[tuple[EventKind, dict[str, Any]]]:
        phone, laptop = self.devices
        views = [
            (EventKind.PAGE_VIEW, page_view(device, "toys"))
            for device in self.devices
            for _ in range(self.views_per_device)
        ]
        return [
            *views,
            (EventKind.IDENTIFY, sign_up(phone, self.email)),
            (EventKind.IDENTIFY, login(laptop, self.user_id, self.email)),
            (EventKind.EMAIL, email_opened(self.email)),
            (EventKind.EMAIL, email_opened(self.email)),
            (EventKind.ORDER, order_placed(self.user_id, 40.0)),
        ]

    def expected(self) -> dict[str, Any]:
        return {
            "profile_id": self.profile_id,
            "page_views": self.views_per_device * len(self.devices),
            "orders": 1,
            "revenue": 40.0,
            "opened": 2,
            "newsletter": "subscribed",
            "anonymous_ids": sorted(self.devices),
            "emails": [self.email],
            "user_ids": [self.user_id],
        }


def summary(profile: dict[str, Any]) -> dict[str, Any]:
    ids = profile["identities"]
    return {
        "profile_id": profile["profile_id"],
        "page_views": profile["views"]["count"],
        "orders": profile["orders"]["placed"],
        "revenue": profile["orders"]["revenue"],
        "opened": profile["email"]["opened"],
        "newsletter": profile["newsletter"]["status"],
        "anonymous_ids": sorted(ids["anonymous_ids"]),
        "emails": ids["emails"],
        "user_ids": ids["user_ids"],
    }


def lookup(worker: Worker, **query: str) -> dict[str, Any] | None:
    response = worker.get("/profiles", **query)
    return response.json() if response.status_code == 200 else None


def assert_one_profile(workers: list[Worker], person: Person) -> None:
    """Every identifier of ``person``, asked of every worker, gives the merged profile."""
    expected = person.expected()
    queries = [
        {"user_id": person.user_id},
        {"email": person.email},
        *({"anonymous_id": device} for device in person.devices),
    ]

    def settled() -> bool:
        for worker in workers:
            for query in queries:
                found = lookup(worker, **query)
                if found is None or summary(found) != expected:
                    return False
        return True

    try:
        wait_until(settled, timeout=SETTLE_S, interval=0.25)
    except AssertionError:
        seen = {str(q): lookup(workers[0], **q) for q in queries}
        raise AssertionError(
            f"{person.tag} did not settle; expected {expected}, saw "
            f"{ {q: summary(p) if p else None for q, p in seen.items()} }"
        ) from None


def produce(topics: Topics, worker: Worker, events: list[tuple[EventKind, dict[str, Any]]]) -> None:
    for kind, value in events:
        topics.produce(worker.settings.input_topic(kind), value)
    topics.flush()


def check_outputs(topics: Topics, worker: Worker, people: list[Person]) -> None:
    settings = worker.settings
    topics.poll()
    merges = topics.seen.get(settings.identity_merges_topic, [])
    merged_away = [m["from_profile_id"] for m in merges]
    assert len(merged_away) == len(set(merged_away)), "a profile was merged twice"
    # Merges chain (a device into a subscriber, the subscriber into the user) and end at
    # the people's profiles.
    survivors = {person.profile_id for person in people}
    assert {m["into_profile_id"] for m in merges} <= survivors | set(merged_away)
    for merge in merges:
        assert merge["cause_event_id"]
        assert merge["identifiers"]
    triggers = topics.seen.get(settings.journeys_topic, [])
    welcome = Counter(t["email"] for t in triggers if t["journey"] == "welcome")
    assert welcome == Counter({person.email: 1 for person in people}), welcome


def test_a_cross_device_journey_ends_as_one_profile_in_any_order(
    worker: Worker, topics: Topics
) -> None:
    run = uuid.uuid4().hex[:6]
    in_order = Person(f"ordered-{run}")
    reversed_ = Person(f"reversed-{run}")
    shuffled = Person(f"shuffled-{run}")
    shuffled_events = shuffled.events()
    random.Random(7).shuffle(shuffled_events)
    # Interleave the three people so their merges run at the same time.
    streams = [in_order.events(), list(reversed(reversed_.events())), shuffled_events]
    interleaved = [event for batch in zip(*streams, strict=True) for event in batch]
    produce(topics, worker, interleaved)

    people = [in_order, reversed_, shuffled]
    for person in people:
        assert_one_profile([worker], person)
        # The phone signed up; the laptop only logged in, yet it is a known subscriber now.
        decision = worker.get("/decisions/newsletter-popup", anonymous_id=person.devices[1])
        assert decision.json() == {"show": False, "reason": "known_subscriber"}
    topics.wait_for(worker.settings.identity_merges_topic, lambda seen: len(seen) >= 1)
    check_outputs(topics, worker, people)
    # A merged-away profile id still answers, with the profile its merges ended in (merges
    # chain: a device into a subscriber, the subscriber into the user).
    merges = topics.seen[worker.settings.identity_merges_topic]
    into = {m["from_profile_id"]: m["into_profile_id"] for m in merges}
    merged_away = merges[0]["from_profile_id"]
    survivor = into[merged_away]
    while survivor in into:
        survivor = into[survivor]
    old = worker.get(f"/profiles/{merged_away}")
    assert old.status_code == 200
    assert old.json()["profile_id"] == survivor
    metrics = worker.get("/metrics").text
    assert "cdp_identity_merges_total" in metrics
    assert "cdp_identifiers_per_profile_bucket" in metrics


def test_two_workers_merge_people_whose_identifiers_live_on_different_workers(
    broker: EmbeddedBroker, two_workers: tuple[Worker, Worker]
) -> None:
    first, second = two_workers
    topics = Topics(broker.bootstrap, first.settings, Codec(first.settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    people = [Person(f"duo{index}-{run}") for index in range(6)]
    events = [event for person in people for event in person.events()]
    random.Random(11).shuffle(events)
    produce(topics, first, events)
    for person in people:
        assert_one_profile([first, second], person)
    check_outputs(topics, first, people)
    topics.close()


def test_a_merge_storm_respects_the_caps(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(worker_env(broker, tmp_path, CDP_MAX_ANONYMOUS_IDS="10"))
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    user_id = f"storm-{uuid.uuid4().hex[:6]}"
    devices = [f"{user_id}-device{index}" for index in range(25)]
    produce(topics, worker, [(EventKind.PAGE_VIEW, page_view(d, "gifts")) for d in devices])
    produce(topics, worker, [(EventKind.IDENTIFY, login(d, user_id)) for d in devices])

    def storm_settled() -> bool:
        profile = lookup(worker, user_id=user_id)
        if profile is None:
            return False
        ids = profile["identities"]
        return len(ids["anonymous_ids"]) + len(ids["refused"]) == len(devices)

    wait_until(storm_settled, timeout=SETTLE_S, interval=0.25)
    user = lookup(worker, user_id=user_id)
    assert user is not None
    linked, refused = user["identities"]["anonymous_ids"], user["identities"]["refused"]
    assert len(linked) == 10
    assert set(refused.values()) == {"cap_exceeded"}

    # Nothing lost, nothing doubled: each refused device keeps its own profile and view.
    def linked_views_merged() -> bool:
        profile = lookup(worker, user_id=user_id)
        return profile is not None and profile["views"]["count"] == len(linked)

    wait_until(linked_views_merged, timeout=SETTLE_S)
    for device in devices:
        own = lookup(worker, anonymous_id=device)
        assert own is not None
        if device in linked:
            assert own["profile_id"] == user["profile_id"]
        else:
            assert own["profile_id"] == profile_id_for(f"anonymous_id:{device}", PARTITIONS)
            assert own["views"]["count"] == 1
    metrics = worker.get("/metrics").text
    assert 'cdp_identity_links_refused_total{reason="cap_exceeded"} 15.0' in metrics
    topics.close()
