"""Tables are recovered from their changelogs: to the last record, wherever the broker says a
partition ends, and in bulk when a partition is far behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import rocksdict
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.partitioning import LIBRDKAFKA_PARTITIONER
from streams.profiles.model import Profile, Stamped
from streams.runtime.app import changelog_topics
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.faust_patches.bulk_restore import (
    BULK_RESTORE_MIN_RECORDS,
    PartitionRestore,
    restore_partitions,
)
from streams.runtime.faust_patches.changelog_ends import last_committed_offsets, last_offsets
from streams.runtime.metrics import sample_total

from .conftest import Worker, needs_transactions, settings_from, worker_env


def create_topic(broker: EmbeddedBroker, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    new = NewTopic(name, num_partitions=partitions, config=config)
    for future in admin.create_topics([new]).values():
        future.result(30)


def raw_database(path: Path) -> rocksdict.Rdict:
    """A database of bytes keys and values, as Faust's tables open them."""
    return rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))


def test_the_last_record_batch_is_read_to_its_end(broker: EmbeddedBroker) -> None:
    topic = f"ends-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    # One batch of eight records in partition 0, one record in partition 1.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200})
    for _ in range(8):
        producer.produce(topic, value=b"state", partition=0)
    producer.produce(topic, value=b"state", partition=1)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    reported = {
        (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] - 1
        for p in (0, 1)
    }
    consumer.close()

    assert last_offsets(broker.bootstrap, reported) == {(topic, 0): 7, (topic, 1): 0}


def test_a_bulk_restore_writes_its_range_last_value_wins_and_tombstones_delete(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"restore-{uuid.uuid4().hex[:6]}"
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    records: list[tuple[bytes, bytes | None]] = [(b"k%d" % n, b"v1") for n in range(100)]
    records += [(b"k%d" % n, b"v2") for n in range(10)]
    records += [(b"k%d" % n, None) for n in range(10, 20)]
    records += [(b"after-the-range", b"v1")]
    for partition in (0, 1):
        for key, value in records:
            producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0
    last = len(records) - 2  # the offset of the last tombstone
    restores = {
        (topic, 0): PartitionRestore(0, last, raw_database(tmp_path / "p0")),
        # Partition 1 as if its first 50 records had been applied before.
        (topic, 1): PartitionRestore(50, last, raw_database(tmp_path / "p1")),
    }

    restore_partitions(broker.bootstrap, restores)

    expected = {b"k%d" % n: b"v2" if n < 10 else b"v1" for n in range(20, 100)}
    expected |= {b"k%d" % n: b"v2" for n in range(10)}
    assert dict(restores[topic, 0].db.items()) == expected
    assert dict(restores[topic, 1].db.items()) == {
        key: value for key, value in expected.items() if int(key[1:]) >= 50 or value == b"v2"
    }
    assert all(restore.written == last for restore in restores.values())


def test_a_worker_without_local_state_restores_a_long_changelog_in_bulk(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = worker_env(broker, tmp_path)
    settings = settings_from(env)
    changelog = changelog_topics(settings)[1]
    create_topic(broker, changelog, settings.partitions, **{"cleanup.policy": "compact"})
    count = settings.partitions * (BULK_RESTORE_MIN_RECORDS + 200)
    # Each key in the partition its hash gives, as the worker's sender places it: lookups
    # read it only there.
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 20,
            "partitioner": LIBRDKAFKA_PARTITIONER,
        }
    )
    profiles = {}
    for n in range(count):
        profile = Profile.new(f"p_{n:024d}")
        profile.traits = {"n": Stamped(str(n), n)}
        profiles[profile.profile_id] = profile
        producer.produce(changelog, key=profile.profile_id.encode(), value=profile.to_json())
        if n % 1_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    worker = make_worker(env)

    metrics = worker.get("/metrics").text
    assert sample_total(metrics, "cdp_changelog_restored_records_total") == count
    assert sample_total(metrics, "cdp_changelog_restore_seconds_total") > 0
    for profile_id in list(profiles)[:: count // 40]:
        response = worker.get(f"/profiles/{profile_id}")
        assert response.status_code == 200, response.text
        assert response.json() == profiles[profile_id].to_dict()


@needs_transactions
def test_the_last_committed_record_is_found_behind_markers_and_an_aborted_transaction(
    broker: EmbeddedBroker,
) -> None:
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic, 3)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "transactional.id": f"{topic}-writer"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for _ in range(3):
        producer.produce(topic, key=b"k", value=b"committed", partition=0)
    producer.produce(topic, key=b"k", value=b"committed", partition=1)
    producer.commit_transaction(30)  # partition 0: records 0-2, marker 3
    producer.begin_transaction()
    for _ in range(100):
        producer.produce(topic, key=b"k", value=b"aborted", partition=0)
    producer.abort_transaction(30)  # partition 0: 4-103 aborted, marker 104
    ends = {(topic, 0): 105, (topic, 1): 2, (topic, 2): 0}
    assert last_committed_offsets(broker.bootstrap, ends) == {
        (topic, 0): 2,
        (topic, 1): 0,
        (topic, 2): -1,
    }
