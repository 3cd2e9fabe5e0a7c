"""End to end against the embedded broker and a real ``cdp worker`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.api.lookups import FORWARDED_HEADER
from streams.codec import Codec
from streams.events import Event, EventKind, Identity
from streams.producer import EventProducer
from streams.runtime.broker import EmbeddedBroker, free_port, is_listening
from streams.runtime.metrics import sample_total
from streams.settings import Settings
from streams.steps.messages import COMMAND_HEADER

from .conftest import (
    Topics,
    Worker,
    run_cdp,
    settings_from,
    start_test_broker,
    wait_until,
    worker_env,
)


def now_ms() -> int:
    return int(time.time() * 1000)


def page_view(anonymous_id: str, category: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"anonymous_id": anonymous_id},
        "url": f"https://shop.example/{category}",
        "category": category,
        **extra,
    }


def sign_up(anonymous_id: str, email: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"anonymous_id": anonymous_id, "email": email},
        "newsletter": "subscribed",
        "consent": {"email_marketing": True},
        "traits": {"first_name": "Ann", "language": "nl"},
    }


def test_events_become_profiles_segment_changes_and_triggers(
    worker: Worker, topics: Topics
) -> None:
    settings = worker.settings
    anonymous_id = f"anon-{uuid.uuid4().hex[:8]}"
    email = f"{anonymous_id}@example.com"
    topics.produce(settings.input_topic(EventKind.IDENTIFY), sign_up(anonymous_id, email))
    topics.flush()
    # The device's browsing after the sign-up lands on the subscriber directly.
    topics.wait_for(settings.segment_changes_topic, lambda seen: len(seen) >= 1)
    wait_until(lambda: worker.get("/profiles", anonymous_id=anonymous_id).status_code == 200)
    views = [page_view(anonymous_id, "toys", product_id=f"p-toys-00{i}") for i in range(3)]
    for view in views:
        topics.produce(settings.input_topic(EventKind.PAGE_VIEW), view)
    # A replay of the same event must change nothing.
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), views[0])
    topics.flush()

    changes = topics.wait_for(
        settings.segment_changes_topic,
        lambda seen: {"newsletter_subscriber", "interest_toys"} <= {c["segment"] for c in seen},
    )
    assert all(change["change"] == "entered" for change in changes)
    profile_ids = {change["profile_id"] for change in changes}
    assert len(profile_ids) == 1
    sequences = sorted(change["sequence"] for change in changes)
    assert sequences == list(range(1, len(changes) + 1))

    triggers = topics.wait_for(
        settings.journeys_topic,
        lambda seen: {"welcome", "interest_inspiration"} <= {t["journey"] for t in seen},
    )
    assert {t["email"] for t in triggers} == {email}
    assert len({t["trigger_id"] for t in triggers}) == len(triggers)

    response = worker.get("/profiles", email=email.upper())
    assert response.status_code == 200
    profile = response.json()
    assert profile["profile_id"] in profile_ids
    assert profile["views"]["count"] == 3
    assert "interest_toys" in profile["segments"]
    assert worker.get(f"/profiles/{profile['profile_id']}").json() == profile

    popup = worker.get("/decisions/newsletter-popup", anonymous_id=anonymous_id).json()
    assert popup == {"show": False, "reason": "known_subscriber"}
    stranger = worker.get("/decisions/newsletter-popup", anonymous_id="never-seen").json()
    assert stranger["show"] is True

    # The tables' databases are opened as streams.runtime.state sizes them, not as Faust does.
    database_options = list(worker.settings.data_dir.rglob("OPTIONS-*"))
    assert database_options
    assert all("\n  compression=kZSTD" in f.read_text() for f in database_options)


def test_producer_api_events_show_up_within_a_second(worker: Worker, topics: Topics) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    order = Event(
        kind=EventKind.ORDER,
        event_id=uuid.uuid4().hex,
        occurred_at=now_ms(),
        identity=Identity(user_id=user_id, email=f"{user_id}@example.com"),
        body={
            "order_id": "o-1",
            "status": "placed",
            "total": 30.0,
            "currency": "EUR",
            "items": [
                {
                    "product_id": "p-gifts-001",
                    "category": "gifts",
                    "quantity": 2,
                    "unit_price": 15.0,
                }
            ],
        },
    )

    def input_waits() -> tuple[float, float]:
        metrics = worker.get("/metrics").text
        return (
            sample_total(metrics, "cdp_input_wait_seconds_count"),
            sample_total(metrics, "cdp_input_wait_seconds_sum"),
        )

    waits_before, producing_from = input_waits(), time.monotonic()
    with EventProducer(topics.bootstrap, settings=worker.settings) as producer:
        producer.send(order)

    def visible() -> bool:
        response = worker.get("/profiles", user_id=user_id)
        return response.status_code == 200 and response.json()["orders"]["placed"] == 1

    wait_until(visible, interval=0.05)
    # The worker timed the order's wait until it started on it, a part of the time here.
    count, total = input_waits()
    assert count - waits_before[0] == 1
    assert 0 <= total - waits_before[1] <= time.monotonic() - producing_from
    profile = worker.get("/profiles", user_id=user_id).json()
    assert profile["orders"]["revenue"] == 30.0
    assert "customer" in profile["segments"]


def events_on(bootstrap: str, topic: str, settings: Settings) -> set[str]:
    """Ids of the events that took a hop over ``topic``, an internal one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "internal-topic-check"})
    partitions = [TopicPartition(topic, p, 0) for p in range(settings.partitions)]
    remaining = sum(consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions)
    consumer.assign(partitions)
    routed: set[str] = set()
    try:
        deadline = time.monotonic() + 15
        while remaining > 0 and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                remaining -= 1
                headers = dict(message.headers() or [])
                if message.error() is None and COMMAND_HEADER not in headers:
                    routed.add(Event.from_wire(message.value() or b"").event_id)
    finally:
        consumer.close()
    return routed


def test_events_keyed_by_their_identifier_are_handled_where_they_arrive(
    worker: Worker, topics: Topics
) -> None:
    """The producer API puts an event in its identifier's partition, and a new profile
    lives there too: no hop over either internal topic. An event keyed otherwise takes the
    hop to that partition and ends the same."""
    settings = worker.settings
    topic = settings.input_topic(EventKind.PAGE_VIEW)
    views = [page_view(f"anon-{uuid.uuid4().hex[:8]}", "toys") for _ in range(24)]
    keyed, otherwise = views[:12], views[12:]
    with EventProducer(topics.bootstrap, settings=settings) as producer:
        for view in keyed:
            producer.send(topics.codec.decode(EventKind.PAGE_VIEW, json.dumps(view).encode()))
    for view in otherwise:
        # librdkafka's own partitioner and the bare id as key: mostly another partition.
        topics.produce(topic, view, key=view["identity"]["anonymous_id"].encode())
    topics.flush()

    ids = [view["identity"]["anonymous_id"] for view in views]
    wait_until(lambda: all(worker.get("/profiles", anonymous_id=a).status_code == 200 for a in ids))
    routed = events_on(topics.bootstrap, settings.topic("internal.identity"), settings)
    assert not routed & {view["event_id"] for view in keyed}
    assert routed & {view["event_id"] for view in otherwise}
    assert not events_on(topics.bootstrap, settings.topic("internal.profile"), settings)


def test_bad_requests_get_4xx_with_a_message(worker: Worker) -> None:
    for path, params, status in [
        ("/profiles", {}, 400),
        ("/profiles", {"email": "a@b.c", "user_id": "1"}, 400),
        ("/profiles", {"email": ""}, 400),
        ("/profiles", {"email": "x" * 600}, 400),
        ("/profiles", {"email": "nobody@example.com"}, 404),
        ("/profiles/p_000000000000000000000000", {}, 404),
        ("/profiles/not-an-id", {}, 400),
        ("/decisions/newsletter-popup", {}, 400),
    ]:
        response = worker.get(path, **params)
        assert response.status_code == status, (path, params, response.text)
        assert response.json()["message"]
    assert worker.get("/health").json() == {"status": "ok"}
    metrics = worker.get("/metrics").text
    assert "cdp_lookup_seconds_bucket" in metrics
    # The event loop's lag is sampled for as long as the worker runs: the first sample is
    # taken a sampling interval after the worker's tasks start, which a loaded machine may
    # not have reached by the first requests.
    wait_until(
        lambda: sample_total(worker.get("/metrics").text, "cdp_event_loop_lag_seconds_count") > 0
    )
    # What the worker made while starting is out of the garbage collector's reach once ready.
    assert sample_total(metrics, "cdp_gc_frozen_objects") > 10_000
    assert sample_total(metrics, "cdp_gc_pause_seconds_count", generation="2") >= 1


def test_personal_data_needs_the_api_token_and_stays_out_of_the_logs(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    token = uuid.uuid4().hex
    worker = make_worker(worker_env(broker, tmp_path, CDP_API_TOKEN=token))
    email = f"private-{uuid.uuid4().hex[:8]}@example.com"
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    topics.produce(worker.settings.input_topic(EventKind.IDENTIFY), sign_up("a-priv", email))
    topics.flush()
    topics.close()
    wait_until(lambda: worker.get("/profiles", email=email).status_code == 200)

    url = f"{worker.api}/profiles"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        response = httpx.get(url, params={"email": email}, headers=headers, timeout=5)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert email not in response.text
    for path in ("/decisions/newsletter-popup?anonymous_id=a-priv", "/profiles/p_0"):
        assert httpx.get(f"{worker.api}{path}", timeout=5).status_code == 401
    # Probes and metrics stay open.
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{worker.api}{path}", timeout=5).status_code == 200, path
    # Oversized and malformed requests get a 4xx, not a traceback.
    assert worker.get("/profiles", email="x" * 20_000).status_code in (400, 414, 431)
    assert httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).is_client_error
    assert email not in worker.log_file.read_text()


def test_invalid_segment_file_fails_at_start_naming_the_segment(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    segments = tmp_path / "segments.yaml"
    segments.write_text("segments:\n  - name: big_spender\n    when: 'profile.orders.revenue >'\n")
    env = worker_env(broker, tmp_path, CDP_SEGMENTS_FILE=str(segments))
    result = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    message = result.stderr.decode() + result.stdout.decode()
    assert "big_spender" in message
    assert "Traceback" not in message
    assert settings_from(env).segments_file == segments


def test_demo_runs_for_a_duration_and_exits_cleanly(broker: EmbeddedBroker, tmp_path: Path) -> None:
    env = worker_env(broker, tmp_path, COLUMNS="120")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "streams", "demo", "--duration", "15", "--rate", "200"),
            *("--mix", "page-view=6,identify=2,order=1,email=1"),
        ],
        env=env,
        capture_output=True,
        timeout=150,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-3000:] + result.stderr.decode(errors="replace")[-3000:]
    assert "newsletter_subscriber" in output
    api = settings_from(env).api_url
    try:
        httpx.get(f"{api}/health", timeout=1)
        still_up = True
    except httpx.HTTPError:
        still_up = False
    assert not still_up, "the demo must stop its worker"


def test_the_demo_refuses_a_mix_it_cannot_use_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--mix", "page-view=lots"],
        env={**os.environ, "CDP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "weight for 'page-view' is not a number: 'lots'" in result.stderr
    assert not (tmp_path / "data").exists()


def test_every_worker_answers_lookups_for_keys_another_worker_owns(
    broker: EmbeddedBroker, two_workers: tuple[Worker, Worker]
) -> None:
    first, second = two_workers
    topics = Topics(broker.bootstrap, first.settings, Codec(first.settings.schemas_dir))
    emails = [f"person{index}-{uuid.uuid4().hex[:6]}@example.com" for index in range(12)]
    for email in emails:
        topics.produce(
            first.settings.input_topic(EventKind.IDENTIFY),
            sign_up(f"anon-{email}", email),
        )
    topics.flush()
    topics.wait_for(first.settings.segment_changes_topic, lambda seen: len(seen) >= len(emails))
    topics.close()
    for email in emails:
        answers = [worker.get("/profiles", email=email) for worker in (first, second)]
        assert [answer.status_code for answer in answers] == [200, 200], email
        assert answers[0].json() == answers[1].json()
        by_anonymous_id = second.get("/profiles", anonymous_id=f"anon-{email}")
        assert by_anonymous_id.json()["profile_id"] == answers[0].json()["profile_id"]
    # A lookup one worker passed on is answered by the owner or refused, never passed on
    # again (two workers that disagree on ownership would pass it back and forth).
    forwarded = {FORWARDED_HEADER: "1", "Authorization": f"Bearer {first.env['CDP_API_TOKEN']}"}
    statuses = Counter(
        httpx.get(f"{worker.api}/identities/email:{email}", headers=forwarded).status_code
        for worker in (first, second)
        for email in emails
    )
    assert statuses == {200: len(emails), 503: len(emails)}, statuses


def test_cdp_produce_and_cdp_profile_commands(worker: Worker) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    lines = "\n".join(
        [
            json.dumps(sign_up(f"anon-{email}", email)),
            "not json at all",
        ]
    )
    refused = run_cdp(worker.env, "produce", "identify", stdin=lines.encode())
    assert refused.returncode == 1, refused.stderr
    assert "line 2: invalid JSON" in refused.stderr
    assert "nothing sent: 1 event of 2 refused" in refused.stderr
    produced = run_cdp(worker.env, "produce", "identify", "--skip-invalid", stdin=lines.encode())
    assert produced.returncode == 1, produced.stderr
    assert "produced 1 event to" in produced.stderr
    assert "refused 1 event" in produced.stderr

    def shown() -> subprocess.CompletedProcess[str]:
        return run_cdp(worker.env, "profile", email, "--api", worker.api)

    wait_until(lambda: shown().returncode == 0)
    profile = json.loads(shown().stdout)
    assert profile["identities"]["emails"] == [email]
    assert profile["newsletter"]["status"] == "subscribed"
    missing = run_cdp(worker.env, "profile", "nobody@example.com", "--api", worker.api)
    assert missing.returncode == 1
    assert "no profile" in missing.stderr


def test_cdp_broker_serves_kafka_with_the_topics_created(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CDP_TOPIC_PREFIX": "brokertest."}
    broker_process = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})

        def has_topics() -> bool:
            try:
                names = set(admin.list_topics(timeout=2).topics)
            except KafkaException:
                return False
            return {"brokertest.page-views", "brokertest.dead-letter"} <= names

        wait_until(has_topics, timeout=30, interval=0.5)
    finally:
        broker_process.terminate()
        broker_process.wait(20)
    wait_until(lambda: not is_listening("127.0.0.1", port), timeout=10)


def test_avro_output_format(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    avro_worker = make_worker(worker_env(broker, tmp_path, CDP_OUTPUT_FORMAT="avro"))
    settings = avro_worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    email = f"avro-{uuid.uuid4().hex[:8]}@example.com"
    topics.produce(settings.input_topic(EventKind.IDENTIFY), sign_up(f"anon-{email}", email))
    topics.flush()
    changes = topics.wait_for(settings.segment_changes_topic, lambda seen: len(seen) >= 1)
    triggers = topics.wait_for(settings.journeys_topic, lambda seen: len(seen) >= 1)
    topics.close()
    assert changes[0]["segment"] == "newsletter_subscriber"
    assert triggers[0]["journey"] == "welcome"
    raw = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "avro-check"})
    raw.assign(
        [TopicPartition(settings.segment_changes_topic, p, 0) for p in range(settings.partitions)]
    )
    values = [m.value() for m in raw.consume(10, timeout=5) if m.error() is None]
    raw.close()
    assert values
    assert all(value is not None and value.startswith(b"\xc3\x01") for value in values)


def test_block_listed_identifiers_never_link(worker: Worker, topics: Topics) -> None:
    settings = worker.settings
    email = f"blocked-{uuid.uuid4().hex[:8]}@example.com"
    topics.produce(settings.input_topic(EventKind.IDENTIFY), sign_up("undefined", email))
    topics.produce(settings.input_topic(EventKind.PAGE_VIEW), page_view("null", "toys"))
    topics.flush()
    letters = topics.wait_for(settings.dead_letter_topic, lambda seen: len(seen) >= 1)
    assert letters[0]["reason"] == "missing_identity"
    assert "block list" in letters[0]["detail"]
    wait_until(lambda: worker.get("/profiles", email=email).status_code == 200)
    assert worker.get("/profiles", email=email).json()["identities"]["anonymous_ids"] == []
    assert worker.get("/profiles", anonymous_id="undefined").status_code == 404
    metrics = worker.get("/metrics").text
    assert 'cdp_identifiers_blocked_total{kind="anonymous_id"} 2.0' in metrics


def stopped_after_sign_up(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker], email: str
) -> dict[str, str]:
    """The environment of a worker that applied ``email``'s sign-up and then stopped cleanly."""
    env = worker_env(broker, tmp_path)
    first = make_worker(env)
    topics = Topics(broker.bootstrap, first.settings, Codec(first.settings.schemas_dir))
    topics.produce(first.settings.input_topic(EventKind.IDENTIFY), sign_up(f"a-{email}", email))
    topics.flush()
    topics.close()
    wait_until(lambda: first.get("/profiles", email=email).status_code == 200)
    first.stop()
    return env


def test_a_worker_whose_broker_lost_everything_starts_afresh(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """Local state outlives a memory-only broker (``make demo`` twice): it is discarded."""
    env = stopped_after_sign_up(broker, tmp_path, make_worker, "old@x.io")

    fresh = start_test_broker(tmp_path / "fresh-broker.log")
    second = make_worker({**env, "CDP_KAFKA_BOOTSTRAP": fresh.bootstrap}, start=False)
    try:
        second.start()
        assert "discarding local state" in second.log_file.read_text()
        topics = Topics(fresh.bootstrap, second.settings, Codec(second.settings.schemas_dir))
        topics.produce(
            second.settings.input_topic(EventKind.IDENTIFY), sign_up("a-new", "new@x.io")
        )
        topics.flush()
        topics.close()
        wait_until(lambda: second.get("/profiles", email="new@x.io").status_code == 200)
        assert second.get("/profiles", email="old@x.io").status_code == 404
    finally:
        second.stop()
        fresh.stop()


def test_a_killed_worker_restores_its_state_and_a_stopped_one_keeps_it(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """After SIGKILL local values may be ahead of the changelog: they are not trusted."""
    env = stopped_after_sign_up(broker, tmp_path, make_worker, "kept@x.io")

    stopped = make_worker(env)
    assert "discarding local state" not in stopped.log_file.read_text()
    assert stopped.get("/profiles", email="kept@x.io").status_code == 200
    stopped.kill()

    killed = make_worker(env)
    assert "did not stop cleanly; discarding local state" in killed.log_file.read_text()
    wait_until(lambda: killed.get("/profiles", email="kept@x.io").status_code == 200)
