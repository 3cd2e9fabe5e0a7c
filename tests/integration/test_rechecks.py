"""Time-based segments flip without another event: the worker's rechecks, end to end."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.metrics import sample_total
from streams.runtime.worker_topics import PROFILES_TABLE, changelog_topic
from streams.settings import PROJECT_ROOT, Settings

from .conftest import GUARANTEES, ONE_STEP_JOURNEYS, Topics, Worker, wait_until, worker_env


def in_changelog(topics: Topics, settings: Settings, profile_id: str, timeout: float = 15) -> None:
    """Wait until the profiles changelog holds a record of ``profile_id``."""
    topic = changelog_topic(settings, PROFILES_TABLE)
    consumer = Consumer(
        {"bootstrap.servers": topics.bootstrap, "group.id": "tests", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.2):
                if message.error() is None and message.key() == profile_id.encode():
                    return
        raise AssertionError(f"{profile_id} not in {topic} after {timeout} s")
    finally:
        consumer.close()


ABANDONED_AFTER_S = 4

CART_REMINDER = """
  - name: cart_reminder
    trigger: {segment_entered: cart_abandoner}
    step: reminder_1
    consent: email_marketing
    payload: [first_name, recently_viewed]
"""


def definitions(tmp_path: Path) -> dict[str, str]:
    """The shipped segments, with carts abandoned after seconds, and the one-step journeys
    with a journey on it."""
    segments = (PROJECT_ROOT / "streams/segments/default_segments.yaml").read_text()
    assert 'duration("1h")' in segments
    segments_file = tmp_path / "segments.yaml"
    segments_file.write_text(
        segments.replace('duration("1h")', f'duration("{ABANDONED_AFTER_S}s")')
    )
    journeys_file = tmp_path / "journeys.yaml"
    journeys = ONE_STEP_JOURNEYS.read_text()
    journeys_file.write_text(journeys + CART_REMINDER)
    return {"CDP_SEGMENTS_FILE": str(segments_file), "CDP_JOURNEYS_FILE": str(journeys_file)}


def shopper(email: str) -> list[tuple[EventKind, dict[str, Any]]]:
    """A subscriber who puts a product in the cart and leaves."""
    now = int(time.time() * 1000)
    identity = {"email": email}
    return [
        (
            EventKind.IDENTIFY,
            {
                "event_id": uuid.uuid4().hex,
                "occurred_at": now,
                "identity": identity,
                "newsletter": "subscribed",
                "consent": {"email_marketing": True},
            },
        ),
        (
            EventKind.PAGE_VIEW,
            {
                "event_id": uuid.uuid4().hex,
                "occurred_at": now,
                "identity": identity,
                "url": "https://shop.example/toys/pram",
                "category": "toys",
                "product_id": "pram",
                "action": "add_to_cart",
            },
        ),
    ]


def abandoned(topics: Topics, timeout: float) -> list[dict[str, Any]]:
    return topics.wait_for(
        topics.settings.segment_changes_topic,
        lambda seen: any(c["segment"] == "cart_abandoner" for c in seen),
        timeout=timeout,
    )


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_an_abandoned_cart_enters_its_segment_without_another_event(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker], guarantee: str
) -> None:
    # Under exactly_once the internal topics end in commit markers, not records: the recheck
    # must not wait for input that never comes.
    env = worker_env(broker, tmp_path, CDP_PROCESSING_GUARANTEE=guarantee, **definitions(tmp_path))
    worker = make_worker(env)
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    added = time.time()
    for kind, event in shopper(email):
        topics.produce(worker.settings.input_topic(kind), event)
    topics.flush()

    changes = abandoned(topics, timeout=ABANDONED_AFTER_S + 10)
    entered = [c for c in changes if c["segment"] == "cart_abandoner"]
    assert [c["change"] for c in entered] == ["entered"]
    assert entered[0]["cause_event_id"].startswith("recheck:")
    assert time.time() - added >= ABANDONED_AFTER_S
    triggers = topics.wait_for(
        worker.settings.journeys_topic,
        lambda seen: any(t["journey"] == "cart_reminder" for t in seen),
    )
    assert [t["email"] for t in triggers if t["journey"] == "cart_reminder"] == [email]
    profile = worker.get("/profiles", email=email).json()
    assert "cart_abandoner" in profile["segments"]
    # Rechecked once, at the instant ">= 4s" turns true; then none is due.
    wait_until(lambda: worker.get("/profiles", email=email).json()["segment_recheck_at"] is None)
    metrics = worker.get("/metrics").text
    assert sample_total(metrics, "cdp_segment_rechecks_total", outcome="evaluated") == 1
    topics.poll()
    changes = topics.seen[worker.settings.segment_changes_topic]
    assert [c["change"] for c in changes if c["segment"] == "cart_abandoner"] == ["entered"]
    topics.close()


def test_a_recheck_due_while_no_worker_ran_comes_after_the_restart(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = worker_env(broker, tmp_path, **definitions(tmp_path))
    worker = make_worker(env)
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    for kind, event in shopper(email):
        topics.produce(worker.settings.input_topic(kind), event)
    topics.flush()
    wait_until(lambda: worker.get("/profiles", email=email).status_code == 200)
    profile = worker.get("/profiles", email=email).json()
    assert list(profile["cart"]["items"]) == ["pram"]
    assert profile["segment_recheck_at"] is not None
    # Killed before the recheck is due; the restarted worker learns of it from its table.
    # A profile is readable once in the worker's database, its changelog record a moment
    # later: killed in between, the restarted worker (which does not trust the local state
    # of a killed one) would apply the cart anew, after the recheck was due.
    in_changelog(topics, worker.settings, profile["profile_id"])
    worker.kill()
    restarted = make_worker(env)
    changes = abandoned(topics, timeout=ABANDONED_AFTER_S + 30)
    entered = [c for c in changes if c["segment"] == "cart_abandoner"]
    assert [c["change"] for c in entered] == ["entered"]
    # Rechecked at the instant ">= 4s" turns true: the one stored before the kill.
    assert entered[0]["cause_event_id"] == f"recheck:{profile['segment_recheck_at']}"
    # The change is sent before the batch's table values are written: read until it shows.
    wait_until(
        lambda: "cart_abandoner" in restarted.get("/profiles", email=email).json()["segments"]
    )
    topics.close()


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_sigkill_around_rechecks_doubles_no_segment_change_and_no_trigger(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """Carts come due for rechecks while the worker is killed and restarted: every shopper
    enters cart_abandoner once, with one cause, and gets one reminder trigger id."""
    rnd = random.Random(20261203)
    env = worker_env(broker, tmp_path, **definitions(tmp_path))
    worker = make_worker(env)
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    emails = [f"cart{i}-{run}@example.com" for i in range(16)]

    carts = []
    # Subscribed before the carts: the reminder goes only to subscribers.
    for email in emails:
        (kind, signup), cart = shopper(email)
        topics.produce(worker.settings.input_topic(kind), signup)
        carts.append(cart)
    topics.flush()
    wait_until(lambda: all(worker.get("/profiles", email=e).status_code == 200 for e in emails))

    def produce() -> None:
        for kind, cart in carts:
            cart["occurred_at"] = int(time.time() * 1000)
            topics.produce(worker.settings.input_topic(kind), cart)
            topics.flush()
            time.sleep(0.4)  # their recheck times spread over six seconds

    feeder = threading.Thread(target=produce)
    feeder.start()
    # The first kill as the first recheck times come, the others right after restarts.
    time.sleep(ABANDONED_AFTER_S + rnd.uniform(-0.5, 1.5))
    for _ in range(3):
        worker.kill()
        worker.start()
        time.sleep(rnd.uniform(0.0, 1.5))
    feeder.join()

    def settled() -> bool:
        return all(
            "cart_abandoner" in worker.get("/profiles", email=email).json()["segments"]
            for email in emails
        )

    wait_until(settled, timeout=60, interval=1.0)
    time.sleep(2.0)  # anything re-sent after the last restart reaches the topics
    for _ in range(10):
        topics.poll()
    changes = [
        c
        for c in topics.seen[worker.settings.segment_changes_topic]
        if c["segment"] == "cart_abandoner"
    ]
    causes = {(c["profile_id"], c["change"], c["cause_event_id"]) for c in changes}
    assert len(causes) == len(emails), sorted(causes)
    assert {change for _, change, _ in causes} == {"entered"}
    reminded = {
        (t["email"], t["trigger_id"])
        for t in topics.seen[worker.settings.journeys_topic]
        if t["journey"] == "cart_reminder"
    }
    # One trigger id per shopper, however often it was sent.
    assert sorted(email for email, _ in reminded) == sorted(emails)
    topics.close()
