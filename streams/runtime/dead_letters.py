"""Reading the dead-letter topic and replaying chosen letters (``cdp dead-letters``).

A dead letter keeps the original key, value and headers and where they came from, so after
a fix (a schema change, a raised limit, a bug fixed) the letters can be published again to
their original topic. Replaying is safe to repeat: events are de-duplicated by ``event_id``,
and whatever still fails is dead-lettered again with its reason.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.codec import Codec, DecodeError
from streams.runtime.kafka_clients import client_config


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    """Where the letter itself sits on the dead-letter topic (``partition:offset`` names it)."""
    offset: int
    topic: str
    """Where the original message came from."""
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    reason: str
    detail: str
    dead_lettered_at: int

    @property
    def at(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def from_record(cls, partition: int, offset: int, record: dict[str, Any]) -> DeadLetter:
        return cls(
            partition=partition,
            offset=offset,
            topic=record["topic"],
            source_partition=record["partition"],
            source_offset=record["offset"],
            key=record["key"],
            value=record["value"],
            headers=dict(record.get("headers") or {}),
            reason=record["reason"],
            detail=record["detail"],
            dead_lettered_at=record["occurred_at"],
        )

    def to_json(self) -> dict[str, Any]:
        """For ``--json``: bytes as base64, as on the topic in the JSON output format."""
        return {
            "at": self.at,
            "topic": self.topic,
            "partition": self.source_partition,
            "offset": self.source_offset,
            "reason": self.reason,
            "detail": self.detail,
            "occurred_at": self.dead_lettered_at,
            "key": base64.b64encode(self.key).decode() if self.key is not None else None,
            "value": base64.b64encode(self.value).decode(),
            "headers": self.headers,
        }


def select(
    letters: Iterable[DeadLetter],
    *,
    reasons: Sequence[str] = (),
    topics: Sequence[str] = (),
    at: Sequence[str] = (),
) -> list[DeadLetter]:
    """The letters matching every given filter (an empty filter matches everything)."""
    return [
        letter
        for letter in letters
        if (not reasons or letter.reason in reasons)
        and (not topics or letter.topic in topics)
        and (not at or letter.at in at)
    ]


def count_by(letters: Iterable[DeadLetter], field: str) -> Counter[str]:
    return Counter(str(getattr(letter, field)) for letter in letters)


def read(bootstrap: str, topic: str, codec: Codec, idle_s: float = 1.0) -> list[DeadLetter]:
    """Every letter on ``topic``, oldest first per partition; unreadable records are skipped.

    Reads until the topic has been quiet for ``idle_s``: the end offsets some brokers
    report (the embedded one among them) can lie before the last records.
    """
    settings = {**client_config(bootstrap), "group.id": "cdp-dead-letters"}
    consumer = Consumer({**settings, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        filled = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition))
            if high > low:
                filled.append(partition)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in filled])
        letters: list[DeadLetter] = []
        timeout = 10.0 if filled else 0.0  # the first fetch also connects
        while batch := consumer.consume(1000, timeout=timeout):
            timeout = idle_s
            for message in batch:
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                try:
                    record = codec.decode_record("DeadLetter", message.value() or b"")
                except DecodeError:
                    continue
                letters.append(DeadLetter.from_record(partition, offset, record))
        return letters
    finally:
        consumer.close()


def replay(bootstrap: str, letters: Iterable[DeadLetter]) -> int:
    """Publish each letter's original key, value and headers to its original topic."""
    producer = Producer({**client_config(bootstrap), "linger.ms": 5})
    sent = 0
    for letter in letters:
        headers: dict[str, str | bytes | None] = dict(letter.headers)
        producer.produce(letter.topic, key=letter.key, value=letter.value, headers=headers)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} replayed messages were not acknowledged by the broker")
    return sent
