"""Privacy end to end: consent revoked in one event, retention, access (export)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.codec import Codec
from streams.events import EventKind
from streams.profiles.retention import profile_hash
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.metrics import sample_total
from streams.runtime.processes import local_http
from streams.runtime.worker_topics import changelog_topic
from streams.settings import Settings

from .conftest import Topics, Worker, run_cdp, wait_until, worker_env

CONSENTED_SEGMENTS = """
segments:
  - name: newsletter_subscriber
    when: 'profile.newsletter == "subscribed"'
    consent: email_marketing
  - name: interest_toys
    when: '"toys" in profile.views_by_category'
    consent: email_marketing
"""


def event(identity: dict[str, str], **body: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": int(time.time() * 1000),
        "identity": identity,
        **body,
    }


def toys_view(identity: dict[str, str]) -> dict[str, Any]:
    return event(identity, url="https://shop.example/c/toys", category="toys", action="view")


def test_a_revocation_stops_segment_and_journey_outputs_in_the_same_event(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    segments = tmp_path / "segments.yaml"
    segments.write_text(CONSENTED_SEGMENTS)
    worker = make_worker(worker_env(broker, tmp_path, CDP_SEGMENTS_FILE=str(segments)))
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    identity = {"email": email}
    signup = event(identity, newsletter="subscribed", consent={"email_marketing": True})
    topics.produce(settings.input_topic(EventKind.IDENTIFY), signup)
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view(identity))
    topics.flush()
    triggers = topics.wait_for(settings.journeys_topic, lambda seen: len(seen) >= 2)
    assert sorted(t["journey"] for t in triggers) == ["interest_inspiration", "welcome"]

    unsubscribe = event(identity, campaign_id="c1", message_id="m1", action="unsubscribed")
    topics.produce(settings.input_topic(EventKind.EMAIL), unsubscribe)
    topics.flush()
    changes = topics.wait_for(
        settings.segment_changes_topic,
        lambda seen: sum(c["change"] == "exited" for c in seen) >= 2,
    )
    exits = [c for c in changes if c["change"] == "exited"]
    assert sorted(c["segment"] for c in exits) == ["interest_toys", "newsletter_subscriber"]
    assert {c["cause_event_id"] for c in exits} == {unsubscribe["event_id"]}

    # What follows would enter segments and trigger journeys with the consent.
    order = event(
        identity,
        order_id="o1",
        status="placed",
        total=10.0,
        currency="EUR",
        items=[{"product_id": "pram", "category": "toys", "quantity": 1, "unit_price": 10.0}],
    )
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view(identity))
    topics.produce(settings.input_topic(EventKind.ORDER), order)
    topics.flush()

    def folded() -> bool:
        profile = worker.get("/profiles", email=email).json()
        return bool(profile["views"]["count"] == 2 and profile["orders"]["placed"] == 1)

    wait_until(folded)
    profile = worker.get("/profiles", email=email).json()
    assert profile["segments"] == []
    assert profile["consent"]["email_marketing"]["granted"] is False
    assert [
        (c["purpose"], c["granted"], c["source"], c["event_id"]) for c in profile["consent_history"]
    ] == [
        ("email_marketing", True, "identify", signup["event_id"]),
        ("email_marketing", False, "email.unsubscribed", unsubscribe["event_id"]),
    ]
    time.sleep(1)  # outputs are sent before the profile is written; give stragglers a moment
    topics.poll()
    assert len(topics.seen[settings.journeys_topic]) == 2
    entered = [c for c in topics.seen[settings.segment_changes_topic] if c["change"] == "entered"]
    assert len(entered) == 2
    topics.close()


def changelog_values(bootstrap: str, settings: Settings, table: str, key: str) -> list[Any]:
    """Every value the table's changelog holds for ``key``, in order (None: a tombstone)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests", "enable.auto.commit": False}
    )
    topic = changelog_topic(settings, table)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    values = []
    try:
        while batch := consumer.consume(500, timeout=1.0):
            values += [m.value() for m in batch if m.error() is None and m.key() == key.encode()]
    finally:
        consumer.close()
    return values


def tombstoned(bootstrap: str, settings: Settings, table: str, key: str) -> bool:
    """Whether the last record of ``key`` in the table's changelog is a tombstone."""
    return changelog_values(bootstrap, settings, table, key)[-1:] == [None]


def test_an_anonymous_profile_expires_and_one_with_an_email_stays(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(worker_env(broker, tmp_path, CDP_ANONYMOUS_RETENTION="4s"))
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    visitor = uuid.uuid4().hex
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view({"anonymous_id": visitor}))
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view({"email": email}))
    topics.flush()
    wait_until(lambda: worker.get("/profiles", anonymous_id=visitor).status_code == 200)
    visitor_id = worker.get("/profiles", anonymous_id=visitor).json()["profile_id"]
    seen = time.monotonic()

    wait_until(lambda: worker.get("/profiles", anonymous_id=visitor).status_code == 404, timeout=30)
    assert time.monotonic() - seen >= 3  # not before its retention ran out
    assert worker.get(f"/profiles/{visitor_id}").status_code == 404
    # Removed from both tables' changelogs too, by a tombstone after the values.
    for table, key in (("profiles", visitor_id), ("identities", f"anonymous_id:{visitor}")):
        values = changelog_values(broker.bootstrap, settings, table, key)
        assert values[0] is not None
        assert values[-1] is None
    assert worker.get("/profiles", email=email).status_code == 200
    expired = topics.wait_for(settings.privacy_events_topic, lambda seen: bool(seen))
    assert [(e["type"], e["profile_hash"], e["anonymous"]) for e in expired] == [
        ("expired", profile_hash(visitor_id), True)
    ]
    assert visitor not in str(expired)
    metrics = worker.get("/metrics").text
    assert sample_total(metrics, "cdp_expired_profiles_total", kind="anonymous") == 1
    # The visitor coming back starts a new profile, with nothing of the old one.
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view({"anonymous_id": visitor}))
    topics.flush()
    wait_until(lambda: worker.get("/profiles", anonymous_id=visitor).status_code == 200)
    assert worker.get("/profiles", anonymous_id=visitor).json()["views"]["count"] == 1
    topics.close()


def signed_up_on_a_device(
    worker: Worker, topics: Topics, **signup: Any
) -> tuple[str, str, str, str]:
    """A device browses anonymously, then signs up with an email (merged once applied):
    the device's anonymous id, the email, the anonymous profile's id and the sign-up's
    event id."""
    settings = worker.settings
    device, email = uuid.uuid4().hex, f"{uuid.uuid4().hex[:8]}@example.com"
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), toys_view({"anonymous_id": device}))
    topics.flush()
    wait_until(lambda: worker.get("/profiles", anonymous_id=device).status_code == 200)
    anonymous_id = worker.get("/profiles", anonymous_id=device).json()["profile_id"]
    identify = event({"anonymous_id": device, "email": email}, newsletter="subscribed", **signup)
    topics.produce(settings.input_topic(EventKind.IDENTIFY), identify)
    topics.flush()
    return device, email, anonymous_id, identify["event_id"]


def test_an_export_holds_everything_about_a_merged_person_and_needs_the_token(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    token = uuid.uuid4().hex
    worker = make_worker(worker_env(broker, tmp_path, CDP_API_TOKEN=token))
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    # Signing up on a device: the anonymous profile is merged into the email's.
    device, email, anonymous_id, signup_id = signed_up_on_a_device(
        worker, topics, consent={"email_marketing": True}
    )
    merges = topics.wait_for(settings.identity_merges_topic, lambda seen: bool(seen))
    assert [m["from_profile_id"] for m in merges] == [anonymous_id]
    profile_id = worker.get("/profiles", email=email).json()["profile_id"]
    assert profile_id != anonymous_id

    path = f"/profiles/{profile_id}/export"
    assert local_http().get(f"{worker.api}{path}").status_code == 401
    # The merge's outputs are sent before the merged profile is written: read until it shows.
    wait_until(lambda: worker.get(path).json()["merged_profiles"] == [anonymous_id])
    wait_until(lambda: "welcome" in str(worker.get(path).json()["journeys"]["sent"]))
    exported = worker.get(path).json()
    assert exported["identifiers"]["anonymous_ids"] == [device]
    assert exported["identifiers"]["emails"] == [email]
    assert [c["event_id"] for c in exported["consent_history"]] == [signup_id]
    assert "newsletter_subscriber" in exported["segments"]
    assert exported["profile"]["views"]["count"] == 1  # the anonymous browsing came along
    assert [j["journey"] for j in exported["journeys"]["journeys"]] == ["welcome"]
    assert set(exported["held_elsewhere"]) == {"output_topics", "dead_letters", "table_changelogs"}

    env = {**worker.env, "CDP_ADVERTISED_URL": worker.api}
    done = run_cdp(env, "privacy", "export", f"anonymous_id:{device}")
    assert done.returncode == 0, done.stderr
    from_cli = json.loads(done.stdout)
    assert from_cli["profile_id"] == profile_id
    assert from_cli["identifiers"] == exported["identifiers"]
    unknown = run_cdp(env, "privacy", "export", "email:nobody@example.com")
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    topics.close()


def test_a_known_profile_expires_with_its_identifiers_and_the_forward_of_its_merge(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = worker_env(broker, tmp_path, CDP_ANONYMOUS_RETENTION="1h", CDP_PROFILE_RETENTION="4s")
    worker = make_worker(env)
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    device, email, anonymous_id, _ = signed_up_on_a_device(worker, topics)
    topics.wait_for(settings.identity_merges_topic, lambda seen: bool(seen))
    wait_until(lambda: worker.get("/profiles", email=email).status_code == 200)
    profile_id = worker.get("/profiles", email=email).json()["profile_id"]

    wait_until(lambda: worker.get("/profiles", email=email).status_code == 404, timeout=30)
    assert worker.get("/profiles", anonymous_id=device).status_code == 404
    for gone in (profile_id, anonymous_id):  # the profile, and the forward its merge left
        assert worker.get(f"/profiles/{gone}").status_code == 404
    for table, key in (
        ("profiles", profile_id),
        ("profiles", anonymous_id),
        ("identities", f"email:{email}"),
        ("identities", f"anonymous_id:{device}"),
    ):
        wait_until(partial(tombstoned, broker.bootstrap, settings, table, key))
    expired = topics.wait_for(settings.privacy_events_topic, lambda seen: bool(seen))
    assert [(e["profile_hash"], e["anonymous"]) for e in expired] == [
        (profile_hash(profile_id), False)
    ]
    metrics = worker.get("/metrics").text
    assert sample_total(metrics, "cdp_expired_profiles_total", kind="known") == 1
    topics.close()
