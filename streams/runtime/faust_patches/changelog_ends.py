"""Recover a table to the last record its changelog holds (wraps
``Recovery._build_highwaters``; faust-streaming 0.15)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.runtime.broker_kind import is_embedded_broker
from streams.runtime.kafka_clients import client_config


def changelog_reader(bootstrap: str, group_id: str, **options: str | bool) -> KafkaConsumer:
    """A confluent-kafka consumer for reading changelog partitions it is assigned; it
    commits nothing, so ``group_id`` only names it. It reads committed records only
    (exactly once, the changelogs are written in transactions)."""
    return KafkaConsumer(
        {
            **client_config(bootstrap),
            "group.id": group_id,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "isolation.level": "read_committed",
            **options,
        }
    )


def broker_bootstrap(app: Any) -> str:
    """The bootstrap servers of a Faust app, as confluent-kafka takes them."""
    return ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)


def last_offsets(
    bootstrap: str, reported: dict[tuple[str, int], int], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """The offset of the last record of each partition, read from the broker's records.

    ``reported`` holds the last offset a partition's end suggests; on brokers that report
    the start of the last record batch, that batch is read to its end.
    """
    consumer = changelog_reader(bootstrap, "cdp-changelog-ends")
    last = dict(reported)
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in reported.items()])
        seen: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Once every partition gave a record, what is left of its last batch came with
            # it: a short wait for stragglers is enough (a worker is not ready before this).
            wait_s = 0.05 if seen >= reported.keys() else 0.3
            batch = consumer.consume(10_000, timeout=wait_s)
            if not batch and seen >= reported.keys():
                break
            for message in batch:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if message.error() or topic is None or partition is None or offset is None:
                    continue
                seen.add((topic, partition))
                last[topic, partition] = max(last[topic, partition], offset)
    finally:
        consumer.close()
    return last


def last_committed_offsets(
    bootstrap: str, ends: dict[tuple[str, int], int], timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The offset of the last committed record before each partition's end (its last stable
    offset), -1 where there is none; the offset before the end where none was found within
    ``timeout_s``.

    A transaction's commit marker, and the records and marker of an aborted one, take offsets
    that no read_committed reader is given, so the offset before the end is seldom a record.
    The tail is read, a window wider each time until a record turns up.
    """
    last: dict[tuple[str, int], int] = {}
    consumer = changelog_reader(bootstrap, "cdp-changelog-ends", **{"enable.partition.eof": True})
    deadline = time.monotonic() + timeout_s
    try:
        window = 64
        todo = {where: end for where, end in ends.items() if end > 0}
        while todo and time.monotonic() < deadline:
            starts = {where: max(0, end - window) for where, end in todo.items()}
            consumer.assign([TopicPartition(t, p, starts[t, p]) for t, p in todo])
            at_end: set[tuple[str, int]] = set()
            while at_end < todo.keys() and time.monotonic() < deadline:
                for message in consumer.consume(10_000, timeout=0.5):
                    where = (str(message.topic()), int(message.partition() or 0))
                    offset = message.offset() or 0
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add(where)
                    elif where in todo and offset < todo[where]:
                        last[where] = max(last.get(where, -1), offset)
            consumer.unassign()
            todo = {w: e for w, e in todo.items() if w not in last and starts[w] > 0}
            window *= 16
    finally:
        consumer.close()
    # Not found in time: Faust's own end, which it may wait for, rather than none, which
    # would leave the partition's records unrestored.
    unresolved = {where for where in todo if where not in last}
    return {w: end - 1 if w in unresolved else last.get(w, -1) for w, end in ends.items()}


def ends_to_read(
    reported: Mapping[TP, int], persisted: Mapping[TP, int | None]
) -> dict[tuple[str, int], int]:
    """The partitions whose last record must be read from the broker, with the end reported.

    Local state that reaches into the last batch holds all of it (its worker wrote or read
    that batch whole), so after a clean restart there are none.
    """
    unknown = {}
    for tp, end in reported.items():
        local = persisted.get(tp)
        if end >= 0 and (local is None or local < end):
            unknown[tp.topic, tp.partition] = end
    return unknown


def read_changelogs_to_their_true_end(read_committed: bool = False) -> None:
    """Recover a table up to the last record its changelog holds, not where the broker says.

    The embedded broker (Tansu 0.6.0) answers ListOffsets with the base offset of the last
    record batch plus one, not the offset after its last record. Faust recovers up to that
    reported end, so a worker taking over a partition missed the tail of the last batch
    of table writes, and the next event applied to such a profile built on stale state (the
    join/kill test lost a page view this way). Faust also refused to recover at all
    ("persisted offset is higher than the highwater") when a worker took back a partition
    it had written. Here the last batch is read to its end first. On Kafka the reported
    end is exact, and the check is skipped (:mod:`streams.runtime.broker_kind`).

    ``read_committed`` (exactly once): the reported end is the last stable offset, after
    which transaction markers may follow the last record; Faust, waiting for a record at the
    offset before the end, would never finish recovering. The last committed record is read.
    """
    build = Recovery._build_highwaters
    if getattr(build, "reads_to_true_end", None) == (read_committed,):
        return
    build = getattr(build, "original", build)

    @functools.wraps(build)
    async def build_highwaters(
        self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await build(self, consumer, tps, destination, title)
        if read_committed:
            ends = {(tp.topic, tp.partition): destination[tp] + 1 for tp in tps}
            last = await asyncio.to_thread(last_committed_offsets, broker_bootstrap(self.app), ends)
            for tp in tps:
                destination[tp] = last[tp.topic, tp.partition]
            return
        if not await asyncio.to_thread(is_embedded_broker, broker_bootstrap(self.app)):
            return
        persisted = {tp: self.tp_to_table[tp].persisted_offset(tp) for tp in tps}
        to_read = ends_to_read({tp: destination[tp] for tp in tps}, persisted)
        if to_read:
            bootstrap = broker_bootstrap(self.app)
            last = await asyncio.to_thread(last_offsets, bootstrap, to_read)
            for tp in tps:
                destination[tp] = max(destination[tp], last.get((tp.topic, tp.partition), -1))
        for tp in tps:
            local = persisted[tp]
            if local is not None and local > destination[tp]:
                destination[tp] = local

    build_highwaters.original = build  # type: ignore[attr-defined]
    build_highwaters.reads_to_true_end = (read_committed,)  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]
