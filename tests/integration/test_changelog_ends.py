"""A table is recovered up to the last record of its changelog, wherever the broker says it ends."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.broker import EmbeddedBroker
from streams.faust_fixes import last_offsets


def test_the_last_record_batch_is_read_to_its_end(broker: EmbeddedBroker) -> None:
    topic = f"ends-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=2)]).values():
        future.result(30)
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
