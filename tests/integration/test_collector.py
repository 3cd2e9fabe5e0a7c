"""``cdp collector`` as a real process in front of a real worker: the real Segment Python
client in, the profile out through the worker API; malformed requests; a full queue."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.runtime.broker import EmbeddedBroker, free_port, start_broker
from tests.integration.conftest import PARTITIONS, Worker, wait_until, worker_env

pytestmark = pytest.mark.integration

WRITE_KEY = "wk_test_shop"
SERVER_KEY = "wk_test_booking"
WRITE_KEYS = f"{WRITE_KEY}:web-shop,{SERVER_KEY}:booking"


@dataclass
class Collector:
    url: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_collector(env: dict[str, str], log_file: Path, **overrides: str) -> Collector:
    port = free_port()
    env = {
        **env,
        "CDP_COLLECTOR_PORT": str(port),
        "CDP_COLLECTOR_WRITE_KEYS": WRITE_KEYS,
        **overrides,
    }
    with open(log_file, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "collector"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    collector = Collector(f"http://127.0.0.1:{port}", process, log_file)

    def healthy() -> bool:
        assert process.poll() is None, f"collector exited:\n{collector.log()}"
        try:
            return httpx.get(f"{collector.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=30)
    return collector


@pytest.fixture
def collector_for(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(env: dict[str, str], **overrides: str) -> Collector:
        made = start_collector(env, tmp_path / f"collector-{len(started)}.log", **overrides)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


def profile_of(worker: Worker, **identifier: str) -> dict[str, Any] | None:
    ((kind, value),) = identifier.items()
    response = worker.get("/profiles", **{kind: value})
    return response.json() if response.status_code == 200 else None


def test_the_segment_python_client_builds_a_profile(
    worker: Worker, collector_for: Callable[..., Collector]
) -> None:
    from segment.analytics.client import Client

    collector = collector_for(worker.env)
    errors: list[Any] = []
    client = Client(
        write_key=SERVER_KEY,
        host=collector.url,
        sync_mode=True,
        gzip=True,
        max_retries=1,
        on_error=lambda error, _items: errors.append(error),
    )
    user, anonymous = f"u-{uuid.uuid4().hex[:8]}", f"anon-{uuid.uuid4().hex[:8]}"
    app_device = f"app-{uuid.uuid4().hex[:8]}"
    client.page(
        anonymous_id=anonymous,
        name="Cakes",
        properties={"url": "https://shop.example/category/baking/cakes", "title": "Cakes"},
    )
    client.identify(
        user_id=user,
        anonymous_id=anonymous,
        traits={"email": "Ann.Collector@Example.com", "first_name": "Ann", "newsletter": True},
        context={"consent": {"categoryPreferences": {"email_marketing": True, "ads": False}}},
    )
    client.track(
        user_id=user,
        event="Order Completed",
        properties={
            "order_id": "o-1",
            "total": 59.5,
            "currency": "EUR",
            "products": [
                {"product_id": "mixer", "price": 59.5, "quantity": 1, "category": "baking"}
            ],
        },
    )
    client.track(
        user_id=user,
        event="Email Link Clicked",
        properties={
            "campaign_id": "c-1",
            "email_id": "e-1",
            "link_url": "https://x/toys",
            "category": "toys",
        },
    )
    for _ in range(2):
        client.track(user_id=user, event="Brochure Requested", properties={"region": "north"})
    # The app on another device, later tied to the account.
    client.screen(anonymous_id=app_device, name="Home")
    client.alias(previous_id=app_device, user_id=user)
    client.group(user_id=user, group_id="family-7", traits={"name": "The Sevens"})
    client.flush()
    assert errors == []

    def complete() -> bool:
        found = profile_of(worker, user_id=user)
        return (
            found is not None
            and found["orders"]["placed"] == 1
            and found["email"]["clicked"] == 1
            and found["views"]["count"] == 2
            and found["events"].get("Brochure Requested", {}).get("count") == 2
            and app_device in found["identities"]["anonymous_ids"]
            and "group_id" in found["traits"]
        )

    wait_until(complete, timeout=30, interval=0.3)
    profile = profile_of(worker, email="ann.collector@example.com")
    assert profile is not None
    assert profile == profile_of(worker, anonymous_id=anonymous)
    assert profile["identities"]["user_ids"] == [user]
    assert set(profile["identities"]["anonymous_ids"]) == {anonymous, app_device}
    assert profile == profile_of(worker, anonymous_id=app_device)
    assert profile["traits"]["group_id"]["value"] == "family-7"
    assert profile["traits"]["group_name"]["value"] == "The Sevens"
    assert profile["identities"]["emails"] == ["ann.collector@example.com"]
    assert profile["traits"]["first_name"]["value"] == "Ann"
    assert {k: v["granted"] for k, v in profile["consent"].items()} == {
        "email_marketing": True,
        "ads": False,
    }
    assert profile["newsletter"]["status"] == "subscribed"
    assert profile["views"]["by_category"] == {"baking": 1}
    # The page and the app screen are both views; only the page has a category.
    assert profile["views"]["count"] == 2
    assert profile["orders"]["revenue"] == 59.5
    assert profile["orders"]["categories"] == {"baking": 1}
    assert profile["email"]["clicked_categories"] == {"toys": 1}

    # On the topic: keyed by the strongest identifier, with the write key's source.
    messages = read_topic(worker, "track", 2)
    assert {m.key() for m in messages} == {f"user_id:{user}".encode()}
    assert all(dict(m.headers() or [])["cdp-source"] == b"booking" for m in messages)

    metrics = httpx.get(f"{collector.url}/metrics").text
    assert 'cdp_collector_requests_total{route="batch",status="200"} 9.0' in metrics
    assert 'cdp_collector_events_total{outcome="order",type="track"} 1.0' in metrics
    assert 'cdp_collector_events_total{outcome="track",type="track"} 2.0' in metrics
    assert "cdp_collector_producer_queue_messages 0.0" in metrics
    assert "cdp_collector_batch_size_count 9.0" in metrics
    assert 'cdp_collector_events_total{outcome="identify",type="alias"} 1.0' in metrics


def read_topic(worker: Worker, suffix: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": worker.settings.kafka_bootstrap, "group.id": "collector-tests"}
    )
    topic = worker.settings.topic(suffix)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[Any] = []
    deadline = time.monotonic() + 15
    while len(found) < count and time.monotonic() < deadline:
        found += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return found


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


AUTH = basic(WRITE_KEY)
GOOD = {"type": "track", "event": "Brochure Requested", "anonymousId": "a-1", "messageId": "m-1"}


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# (name, path, headers, body bytes, status, error, words in the message)
BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes, int, str, str]] = [
    ("no write key", "/v1/track", {}, body(GOOD), 401, "unauthorized", "no write key"),
    (
        "unknown key in header",
        "/v1/track",
        basic("nope"),
        body(GOOD),
        401,
        "unauthorized",
        "unknown write key",
    ),
    (
        "unknown key in body",
        "/v1/track",
        {},
        body({**GOOD, "writeKey": "nope"}),
        401,
        "unauthorized",
        "unknown write key",
    ),
    (
        "bearer, not basic",
        "/v1/track",
        {"Authorization": "Bearer x"},
        body(GOOD),
        401,
        "unauthorized",
        "basic",
    ),
    (
        "basic not base64",
        "/v1/track",
        {"Authorization": "Basic !!!"},
        body(GOOD),
        401,
        "unauthorized",
        "base64",
    ),
    ("empty body", "/v1/track", AUTH, b"", 400, "bad_request", "empty"),
    ("not JSON", "/v1/track", AUTH, b"{not json", 400, "invalid_json", "not json"),
    ("JSON array", "/v1/track", AUTH, b"[1,2]", 400, "bad_request", "json object"),
    ("JSON string", "/v1/track", AUTH, b'"hi"', 400, "bad_request", "json object"),
    ("bad UTF-8", "/v1/track", AUTH, b'{"a": "\xff\xfe"}', 400, "invalid_json", "not json"),
    (
        "gzip header, plain body",
        "/v1/track",
        {**AUTH, "Content-Encoding": "gzip"},
        body(GOOD),
        400,
        "bad_request",
        "cannot read",
    ),
    (
        "brotli body",
        "/v1/track",
        {**AUTH, "Content-Encoding": "br"},
        body(GOOD),
        400,
        "bad_request",
        "send gzip",
    ),
    (
        "gzip cut short",
        "/v1/track",
        {**AUTH, "Content-Encoding": "gzip"},
        gzip.compress(body(GOOD))[:-12],
        400,
        "bad_request",
        "cut short",
    ),
    (
        "body over 500 KB",
        "/v1/batch",
        AUTH,
        body({"batch": [{**GOOD, "properties": {"x": "y" * 600_000}}]}),
        400,
        "too_large",
        "500 kb",
    ),
    (
        "gzip over 500 KB inflated",
        "/v1/batch",
        {**AUTH, "Content-Encoding": "gzip"},
        gzip.compress(body({"batch": [{**GOOD, "properties": {"x": "y" * 600_000}}]})),
        400,
        "too_large",
        "500 kb",
    ),
    (
        "event over 32 KB",
        "/v1/track",
        AUTH,
        body({**GOOD, "properties": {"x": "y" * 40_000}}),
        400,
        "too_large",
        "32 kb",
    ),
    (
        "batch not a list",
        "/v1/batch",
        AUTH,
        body({"batch": {"a": 1}}),
        400,
        "bad_request",
        "must be a list",
    ),
    (
        "batch missing",
        "/v1/batch",
        AUTH,
        body({"messages": []}),
        400,
        "bad_request",
        "must be a list",
    ),
    ("batch empty", "/v1/batch", AUTH, body({"batch": []}), 400, "bad_request", "empty"),
    (
        "batch over 2,500",
        "/v1/batch",
        AUTH,
        body({"batch": [{"type": "track"}] * 2501}),
        400,
        "bad_request",
        "2500",
    ),
    (
        "batch all refused",
        "/v1/batch",
        AUTH,
        body({"batch": [{"type": "track", "event": "X"}]}),
        400,
        "all_refused",
        "no message",
    ),
    (
        "no identity",
        "/v1/track",
        AUTH,
        body({"event": "X"}),
        400,
        "missing_identity",
        "userid or anonymousid",
    ),
    (
        "unknown type in batch",
        "/v1/batch",
        AUTH,
        body({"batch": [{"type": "boom", "userId": "u"}]}),
        400,
        "all_refused",
        "no message",
    ),
    (
        "track without a name",
        "/v1/track",
        AUTH,
        body({"anonymousId": "a"}),
        400,
        "invalid_field",
        "event name",
    ),
    (
        "userId an object",
        "/v1/identify",
        AUTH,
        body({"userId": {"id": 1}}),
        400,
        "invalid_field",
        "userid",
    ),
    (
        "bad timestamp",
        "/v1/page",
        AUTH,
        body({"anonymousId": "a", "timestamp": "soon", "properties": {"url": "u"}}),
        400,
        "invalid_timestamp",
        "timestamp",
    ),
    (
        "timestamp without zone",
        "/v1/page",
        AUTH,
        body({"anonymousId": "a", "timestamp": "2024-01-01T10:00:00", "properties": {"url": "u"}}),
        400,
        "invalid_timestamp",
        "time zone",
    ),
    (
        "page without url",
        "/v1/page",
        AUTH,
        body({"anonymousId": "a"}),
        400,
        "invalid_field",
        "page needs",
    ),
    (
        "order without id",
        "/v1/track",
        AUTH,
        body({"anonymousId": "a", "event": "Order Completed"}),
        400,
        "invalid_field",
        "order_id",
    ),
    (
        "order total text",
        "/v1/track",
        AUTH,
        body(
            {
                "anonymousId": "a",
                "event": "Order Completed",
                "properties": {"order_id": "o", "total": "many"},
            }
        ),
        400,
        "invalid_field",
        "number",
    ),
    (
        "alias without previousId",
        "/v1/alias",
        AUTH,
        body({"userId": "u"}),
        400,
        "missing_identity",
        "previousid",
    ),
    (
        "group without groupId",
        "/v1/group",
        AUTH,
        body({"userId": "u"}),
        400,
        "invalid_field",
        "groupid",
    ),
    (
        "identifier too long",
        "/v1/track",
        AUTH,
        body({**GOOD, "anonymousId": "a" * 600}),
        400,
        "invalid_field",
        "longer than",
    ),
    (
        "a trait too long for the schema",
        "/v1/identify",
        AUTH,
        body({"userId": "u", "traits": {"bio": "b" * 9000}}),
        400,
        "invalid_field",
        "longer",
    ),
    ("unknown route", "/v1/everything", AUTH, body(GOOD), 404, "bad_request", "no route"),
    ("GET a POST route", "/v1/track", AUTH, b"", 405, "bad_request", "not allowed"),
]


def test_malformed_requests_are_answered_and_the_collector_stays_up(
    worker: Worker, collector_for: Callable[..., Collector]
) -> None:
    collector = collector_for(worker.env)
    pid = collector.process.pid
    client = httpx.Client(timeout=10)
    failures = []
    for name, path, headers, content, status, error, words in BAD_REQUESTS:
        method = "GET" if name.startswith("GET") else "POST"
        try:
            response = client.request(
                method, collector.url + path, headers=headers, content=content
            )
        except httpx.HTTPError as exc:
            failures.append(f"{name}: {exc!r}")
            continue
        answer = response.json()
        if (
            response.status_code != status
            or answer.get("error") != error
            or words not in answer.get("message", "").lower()
            or answer.get("success") is not False
        ):
            failures.append(f"{name}: {response.status_code} {answer}")
    assert failures == []
    assert len(BAD_REQUESTS) >= 25

    # A batch with a bad message: the rest is accepted, the bad one listed by index.
    batch = [GOOD, {"type": "track", "event": "X"}, {**GOOD, "messageId": "m-2"}]
    response = client.post(
        collector.url + "/v1/batch", headers=AUTH, content=body({"batch": batch})
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["success"], answer["accepted"]) == (True, 2)
    assert answer["errors"] == [
        {
            "index": 1,
            "messageId": None,
            "reason": "missing_identity",
            "message": "userId or anonymousId is required",
        }
    ]
    # The write key in the body (as analytics.js sends it), on a one-letter route.
    response = client.post(collector.url + "/v1/t", content=body({**GOOD, "writeKey": WRITE_KEY}))
    assert (response.status_code, response.json()) == (200, {"success": True})

    # analytics.js loads its settings from here when its cdnURL points at the collector.
    settings = client.get(f"{collector.url}/v1/projects/{WRITE_KEY}/settings").json()
    segment = settings["integrations"]["Segment.io"]
    assert segment["apiHost"] == collector.url.removeprefix("http://") + "/v1"
    assert (segment["apiKey"], segment["protocol"]) == (WRITE_KEY, "http")
    unknown = client.get(f"{collector.url}/v1/projects/nope/settings")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")

    assert collector.process.poll() is None
    assert collector.process.pid == pid
    assert client.get(collector.url + "/health").status_code == 200
    metrics = client.get(collector.url + "/metrics").text
    assert 'cdp_collector_requests_total{route="track",status="401"} 5.0' in metrics
    assert 'cdp_collector_events_total{outcome="missing_identity",type="track"}' in metrics
    assert "Traceback" not in collector.log()


def test_a_full_queue_answers_429_and_nothing_confirmed_is_lost(
    tmp_path: Path, collector_for: Callable[..., Collector]
) -> None:
    # A broker of its own, stopped under the collector: nothing can be delivered.
    own: EmbeddedBroker = start_broker(free_port(), log_file=tmp_path / "own-broker.log")
    try:
        env = worker_env(own, tmp_path)
        collector = collector_for(
            env,
            CDP_COLLECTOR_QUEUE_MESSAGES="100",
            CDP_COLLECTOR_DELIVERY_TIMEOUT_SECONDS="4",
        )
    finally:
        own.stop()
    batch = {"batch": [{**GOOD, "messageId": f"q-{i}"} for i in range(100)]}
    with httpx.Client(timeout=30) as client:
        first: list[httpx.Response] = []
        holder = threading.Thread(
            target=lambda: first.append(
                client.post(collector.url + "/v1/batch", headers=AUTH, content=body(batch))
            )
        )
        holder.start()

        def queue_full() -> bool:
            text = client.get(collector.url + "/metrics").text
            return "cdp_collector_producer_queue_messages 100.0" in text

        wait_until(queue_full, timeout=20)
        response = client.post(collector.url + "/v1/track", headers=AUTH, content=body(GOOD))
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "queue_full"
        holder.join(30)
    # Not confirmed by Kafka: not answered 200, so the client keeps the events and retries.
    assert first[0].status_code == 503
    assert first[0].json()["error"] == "kafka_unavailable"
    assert collector.process.poll() is None


def test_the_collector_needs_write_keys_and_names_the_variable(tmp_path: Path) -> None:
    from tests.integration.conftest import run_cdp

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    result = run_cdp(env, "collector")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "CDP_COLLECTOR_WRITE_KEYS is unset: give the write keys the collector accepts, "
        "as key:source,key2:source2"
    ]
