"""The sender against a real broker: delivery reports reach the batches waiting on them, and
exactly-once transactions show records and input offsets together or not at all."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.runtime import sender
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.sender import Deliveries, RecordSender, Transactional

from .conftest import needs_transactions


def test_records_queued_while_the_poller_idles_are_reported_at_once(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With nothing under way the poller waits; were it to sleep its idle interval out, the
    # batch below would wait that long for its report (every batch's changelog did, at
    # low load, 20 ms each).
    monkeypatch.setattr(sender, "IDLE_POLL_INTERVAL_S", 30.0)
    topic = f"sender-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        created.result(10)

    async def deliver_one(records: RecordSender) -> None:
        deliveries = Deliveries()
        records.queue(topic, b"key", b"value", deliveries=deliveries)
        deliveries.seal()
        await asyncio.wait_for(deliveries.done.wait(), 5.0)

    async def scenario() -> None:
        records = RecordSender(broker.bootstrap)
        records.start_polling()
        try:
            await deliver_one(records)
            # The poller has seen nothing under way since, and idles.
            await asyncio.sleep(0.2)
            await deliver_one(records)
        finally:
            assert records.close() == 0

    asyncio.run(scenario())


def read_all(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "isolation.level": isolation}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        return [m.value() or b"" for m in consumer.consume(100, timeout=3) if not m.error()]
    finally:
        consumer.close()


@needs_transactions
def test_a_transaction_shows_records_and_offsets_together_and_a_successor_aborts_an_open_one(
    broker: EmbeddedBroker,
) -> None:
    topic, group = f"eos-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        created.result(10)
    ids = Transactional(f"{group}:worker-0", group)

    async def sent(records: RecordSender, value: bytes) -> None:
        deliveries = Deliveries()
        records.queue(topic, b"key", value, deliveries=deliveries)
        deliveries.seal()
        await asyncio.wait_for(deliveries.done.wait(), 10.0)

    async def scenario() -> None:
        first = RecordSender(broker.bootstrap, transactional=ids)
        first.start_polling()
        await sent(first, b"committed")
        await first.commit({(topic, 0): 1})
        # Delivered, never committed: the worker "dies" here.
        await sent(first, b"left open")
        # Its replacement, with the same id, fences it and aborts what it left open.
        second = RecordSender(broker.bootstrap, transactional=ids)
        assert second.close() == 0

    asyncio.run(scenario())
    assert read_all(broker.bootstrap, topic, "read_committed") == [b"committed"]
    assert read_all(broker.bootstrap, topic, "read_uncommitted") == [b"committed", b"left open"]
    committed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
    )[group].result(10)
    assert [tp.offset for tp in committed.topic_partitions] == [1]
