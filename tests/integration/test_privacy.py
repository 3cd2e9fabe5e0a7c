"""Privacy requests end to end: a real worker, 8 partitions, merges across partitions.

A person seen on two devices, then by email and user id, is one profile made of several
merged ones. Erasing it must leave no lookup answering, a tombstone as the last record of
every changelog key it had, and (suppress_with_delete) no trace of later events. A worker
killed while erasing completes every erasure after its restart, each once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.codec import Codec
from streams.events import EventKind
from streams.identity.resolver import profile_id_for
from streams.privacy.requests import PrivacyRequest, is_request_id, new_request
from streams.runtime.app import changelog_topics
from streams.runtime.metrics import sample_total
from streams.runtime.processes import local_http

from .conftest import (
    PARTITIONS,
    RunningBroker,
    Topics,
    Worker,
    run_cdp,
    wait_until,
    worker_env,
)
from .test_fault_injection import read_from_start
from .test_identity import Person, assert_one_profile, lookup, produce
from .test_pipeline import now_ms, page_view, sign_up


def post_request(worker: Worker, type_name: str, identifier: str) -> str:
    response = local_http().post(
        f"{worker.api}/privacy/requests", json={"type": type_name, "identifier": identifier}
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def completions(topics: Topics, worker: Worker) -> list[dict[str, Any]]:
    topics.poll()
    return topics.seen.get(worker.settings.privacy_events_topic, [])


def identifier_keys(person: Person) -> list[str]:
    return [
        f"user_id:{person.user_id}",
        f"email:{person.email}",
        *(f"anonymous_id:{device}" for device in person.devices),
    ]


def last_records(worker: Worker) -> dict[tuple[str, bytes], bytes | None]:
    """The last value of every key of every changelog (None: a tombstone)."""
    settings = worker.settings
    last: dict[tuple[str, bytes], bytes | None] = {}
    for message in read_from_start(settings.kafka_bootstrap or "", changelog_topics(settings), 8):
        last[str(message.topic()), message.key()] = message.value()
    return last


def test_erasing_a_merged_cross_device_profile_leaves_nothing(
    broker: RunningBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    # Erased profiles' marks are forgotten after seconds, not a day, to see them go.
    worker = make_worker(worker_env(broker, tmp_path, CDP_ERASED_MARK_RETENTION="5s"))
    topics = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    try:
        erase_and_check(worker, topics)
    finally:
        topics.close()


def erase_and_check(worker: Worker, topics: Topics) -> None:
    person = Person(f"erase-{uuid.uuid4().hex[:6]}")
    produce(topics, worker, person.events())
    assert_one_profile([worker], person)
    keys = identifier_keys(person)
    # The profiles each identifier founded before the merges: forwards now.
    founded = {profile_id_for(key, PARTITIONS) for key in keys}

    request_id = post_request(worker, "suppress_with_delete", f"email:{person.email}")
    topics.wait_for(
        worker.settings.privacy_events_topic,
        lambda seen: any(r["request_id"] == request_id for r in seen),
    )
    status = worker.get(f"/privacy/requests/{request_id}").json()
    assert status["status"] == "completed", status
    assert status["duration_ms"] >= 0
    assert status["profile_found"] is True

    for query in (
        {"user_id": person.user_id},
        {"email": person.email},
        *({"anonymous_id": device} for device in person.devices),
    ):
        assert lookup(worker, **query) is None, query
    for profile_id in founded:
        assert worker.get(f"/profiles/{profile_id}").status_code == 404

    # Every changelog key the person had ends with a tombstone; no value left names them.
    last = last_records(worker)
    identities, profiles, _ = changelog_topics(worker.settings)
    for key in keys:
        assert (identities, key.encode()) in last, key
        assert last[identities, key.encode()] is None, key
    # Each erased profile (forwards included) leaves a mark, its erasure time, for a while.
    erased = [(profiles, profile_id.encode()) for profile_id in {*founded, person.profile_id}]
    for where in erased:
        value = last.get(where, None)
        assert value is None or set(orjson.loads(value)) == {"erased_at"}, value
    names = [person.email, person.user_id, *person.devices]
    # A tombstone keeps its key until compaction removes it (CDP_CHANGELOG_*); live ones
    # name nobody.
    for (_, stored_key), value in last.items():
        if value is not None:
            assert not any(name in value.decode() for name in names), stored_key
            assert not any(name in stored_key.decode() for name in names), stored_key

    # Downstream audiences drop the person; the record carries no personal data.
    exits = [
        change
        for change in topics.seen.get(worker.settings.segment_changes_topic, [])
        if change["cause_event_id"] == f"erasure:{request_id}"
    ]
    assert {change["change"] for change in exits} == {"exited"}
    assert "newsletter_subscriber" in {change["segment"] for change in exits}
    (done,) = [r for r in completions(topics, worker) if r["request_id"] == request_id]
    assert done["type"] == "erasure_completed"
    assert not any(name in str(done) for name in names)

    # Later events of any of the person's identifiers create nothing, and are counted.
    later = [
        (EventKind.PAGE_VIEW, page_view(person.devices[0], "toys")),
        (EventKind.IDENTIFY, sign_up(person.devices[1], person.email)),
        (EventKind.PAGE_VIEW, page_view(person.devices[1], "garden")),
    ]
    produce(topics, worker, later)

    metrics = worker.get("/metrics").text
    for status_name in ("received", "completed"):
        labels = {"type": "suppress_with_delete", "status": status_name}
        assert sample_total(metrics, "cdp_privacy_requests_total", **labels) == 1
    assert sample_total(metrics, "cdp_erasure_duration_seconds_count") == 1
    assert sample_total(metrics, "cdp_privacy_oldest_open_request_age_seconds") == 0

    def counted() -> float:
        return sample_total(worker.get("/metrics").text, "cdp_suppressed_events_total")

    wait_until(lambda: counted() >= len(later))
    assert counted() == len(later)
    for device in person.devices:
        assert lookup(worker, anonymous_id=device) is None
    assert lookup(worker, email=person.email) is None

    def marks_forgotten() -> bool:
        last = last_records(worker)
        return all(last.get(where, None) is None for where in erased)

    wait_until(marks_forgotten, timeout=30)


def test_events_of_before_an_erasure_read_after_it_create_nothing_new_ones_do(
    worker: Worker, topics: Topics
) -> None:
    """A delete forgets the person, and with the profile its memory of applied events: the
    same events read again afterwards (a replay after a crash, a late producer) must not
    bring the person back. Events that happen after the erasure are a new start."""
    person = Person(f"replay-{uuid.uuid4().hex[:6]}")
    events = person.events()
    produce(topics, worker, events)
    assert_one_profile([worker], person)
    request_id = post_request(worker, "delete", f"user_id:{person.user_id}")
    topics.wait_for(
        worker.settings.privacy_events_topic,
        lambda seen: any(r["request_id"] == request_id for r in seen),
    )
    produce(topics, worker, events)

    def dropped() -> float:
        return sample_total(worker.get("/metrics").text, "cdp_erased_events_dropped_total")

    wait_until(lambda: dropped() >= len(events), timeout=30)
    assert dropped() == len(events)
    for query in ({"user_id": person.user_id}, {"email": person.email}):
        assert lookup(worker, **query) is None, query
    # Back after the erasure: a new profile, from the new event only.
    produce(topics, worker, [(EventKind.IDENTIFY, sign_up(person.devices[0], person.email))])
    wait_until(lambda: lookup(worker, email=person.email) is not None, timeout=30)
    again = lookup(worker, email=person.email)
    assert again is not None
    assert again["views"]["count"] == 0
    assert again["identities"]["user_ids"] == []


def test_bad_privacy_requests_get_4xx(worker: Worker) -> None:
    http = local_http()
    for body, message in (
        ({"type": "forget", "identifier": "email:a@b.c"}, "type must be one of"),
        ({"type": "delete", "identifier": "phone:123"}, "identifier kind must be one of"),
        ({"type": "delete"}, "the body must be"),
    ):
        response = http.post(f"{worker.api}/privacy/requests", json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]
    assert worker.get("/privacy/requests/nope").status_code == 400
    assert worker.get("/privacy/requests/r_" + "0" * 24).status_code == 404


@pytest.mark.parametrize("kind", ["delete", "suppress_with_delete"])
def test_a_worker_killed_while_erasing_completes_each_erasure_once(
    worker: Worker, topics: Topics, kind: str
) -> None:
    run = uuid.uuid4().hex[:6]
    people = [(f"{run}-{n}-device", f"{run}-{n}@example.com") for n in range(300)]
    events = [
        event
        for device, email in people
        for event in (
            (EventKind.PAGE_VIEW, page_view(device, "toys")),
            (EventKind.IDENTIFY, sign_up(device, email)),
        )
    ]
    produce(topics, worker, events)

    def merged(device: str, email: str) -> bool:
        found = lookup(worker, email=email)
        return found is not None and found["identities"]["anonymous_ids"] == [device]

    # Every person merged first: an erasure applies to what was processed before it. A
    # crash re-reads what was processed but not committed: their events, from before the
    # erasure, are dropped then (erasure marks), never applied to a new profile.
    wait_until(lambda: all(merged(device, email) for device, email in people), timeout=60)
    settings = worker.settings
    requests = [
        new_request(kind, f"email:{email}", PARTITIONS, uuid.uuid4().hex, now_ms())
        for _, email in people
    ]
    first, rest = requests[:30], requests[30:]

    def send(batch: list[PrivacyRequest]) -> None:
        for request in batch:
            topics.produce(
                settings.privacy_requests_topic, request.to_bytes(), key=request.identifier.encode()
            )
        topics.flush()

    # Killed once the first erasures are out, while the rest are under way (sent after
    # them: all at once, one fetch can bring them all and finish them together).
    send(first)
    topics.wait_for(settings.privacy_events_topic, lambda seen: len(seen) > 0, timeout=30)
    send(rest)
    worker.kill()
    done_before = len(completions(topics, worker))
    worker.start()

    wanted = {request.request_id for request in requests}

    def all_done(seen: list[dict[str, Any]]) -> bool:
        return wanted <= {record["request_id"] for record in seen}

    seen = topics.wait_for(settings.privacy_events_topic, all_done, timeout=90)
    by_request = Counter(record["event_id"] for record in seen)
    ids_per_request = Counter(
        record["request_id"] for record in {r["event_id"]: r for r in seen}.values()
    )
    assert set(ids_per_request.values()) == {1}, "a request completed under two ids"
    assert done_before < len(wanted), "the worker was killed after every erasure was done"
    # The batches under way at the kill had sent their records but not yet written their
    # state: replayed, they send them again, under the same ids (consumers drop them, as
    # every output's replay), never under a new one.
    assert max(by_request.values()) <= 2, by_request.most_common(3)
    # A completion seen may be one a crashed batch sent before its state was written: the
    # request is read again and erases again, after the person's replayed events. Nobody
    # stays found.
    wait_until(
        lambda: all(lookup(worker, email=email) is None for _, email in people),
        timeout=60,
        explain=lambda: str([e for _, e in people if lookup(worker, email=e) is not None][:5]),
    )


def test_cdp_privacy_commands(worker: Worker) -> None:
    email = f"cli-{uuid.uuid4().hex[:6]}@example.com"
    env = {**worker.env, "CDP_ADVERTISED_URL": worker.api}
    taken = run_cdp(env, "privacy", "erase", "--suppress", f"email:{email}")
    assert taken.returncode == 0, taken.stderr
    request_id = taken.stdout.strip()
    assert is_request_id(request_id), taken.stdout
    assert f"cdp privacy status {request_id}" in taken.stderr

    def completed() -> bool:
        shown = run_cdp(env, "privacy", "status", request_id)
        return shown.returncode == 0 and '"completed"' in shown.stdout

    wait_until(completed, timeout=30, interval=0.5)
    bad = run_cdp(env, "privacy", "suppress", "phone:123")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "identifier kind must be one of: user_id, email, anonymous_id"
    ]


def test_every_worker_answers_a_request_status(two_workers: tuple[Worker, Worker]) -> None:
    """The status lives in the partition of the request's identifier: asked of either worker,
    the one holding it answers (the other passes the question on, with the token)."""
    first, second = two_workers
    token = first.env["CDP_API_TOKEN"]
    http = local_http()
    url = f"{first.api}/privacy/requests"
    refused = http.post(url, json={"type": "delete", "identifier": "email:a@example.com"})
    assert refused.status_code == 401
    request_ids = []
    for n in range(6):  # in several partitions, so both workers hold some
        taken = http.post(
            url,
            json={"type": "suppress", "identifier": f"anonymous_id:d{n}-{uuid.uuid4().hex}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert taken.status_code == 202, taken.text
        request_ids.append(taken.json()["request_id"])

    def answered(worker: Worker, request_id: str) -> bool:
        response = worker.get(f"/privacy/requests/{request_id}")
        return response.status_code == 200 and response.json()["status"] == "completed"

    def all_answered() -> bool:
        return all(answered(w, r) for r in request_ids for w in (first, second))

    wait_until(all_answered, timeout=30)
