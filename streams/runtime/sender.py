"""Everything the stages send, table changelog records included, through one librdkafka
producer.

Faust's ``topic.send`` costs about 200 µs of the event loop per record, more than the rest
of an event's processing; librdkafka's ``produce`` costs a few µs and delivers from its own
threads. Each record counts against the :class:`Deliveries` of the batch that sent it, so a
stage knows when everything a batch sent is out (:mod:`streams.runtime.stages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from confluent_kafka import KafkaError, Message, Producer

from streams.partitioning import LIBRDKAFKA_PARTITIONER
from streams.runtime.kafka_clients import client_config

log = logging.getLogger(__name__)

# Exit status of a worker that stopped at once, without committing (see below).
EXIT_WITHOUT_COMMIT_STATUS = 75

# How often delivery reports are served while records are under way; with none under way,
# the poller waits for the next record queued, or this long at most.
POLL_INTERVAL_S = 0.001
IDLE_POLL_INTERVAL_S = 0.02


def exit_without_committing(reason: str) -> None:
    """Stop the worker now, like a crash: no commit, no clean-stop marker.

    For a failure after which a batch can never finish (a record librdkafka gave up on, a
    helper of the stage that failed): its stage would hold its partitions, unacknowledged,
    forever. The replacement re-reads from the last commit and discards the local state
    (``discard_untrusted_state``).
    """
    log.critical("%s; exiting without committing", reason)
    logging.shutdown()
    os._exit(EXIT_WITHOUT_COMMIT_STATUS)


class Deliveries:
    """The records one batch sent: ``done`` once the batch is sealed and all are delivered.

    ``last_offsets``: the offset of the last record delivered to each partition, kept when
    asked for (the changelog writes, whose offsets the tables persist).
    """

    def __init__(self, *, track_offsets: bool = False) -> None:
        self.outstanding = 0
        self.sealed = False
        self.done = asyncio.Event()
        self.last_offsets: dict[tuple[str, int], int] | None = {} if track_offsets else None

    def sent(self) -> None:
        self.outstanding += 1

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            exit_without_committing(f"could not deliver a record: {error}")
        if self.last_offsets is not None:
            where = (str(message.topic()), int(message.partition() or 0))
            self.last_offsets[where] = max(self.last_offsets.get(where, -1), message.offset() or 0)
        self.outstanding -= 1
        self._check()

    def seal(self) -> None:
        self.sealed = True
        self._check()

    def _check(self) -> None:
        if self.sealed and self.outstanding == 0:
            self.done.set()


class RecordSender:
    def __init__(
        self, bootstrap: str, linger_ms: float = 5.0, delivery_timeout_s: float = 120.0
    ) -> None:
        self._producer = Producer(
            {
                **client_config(bootstrap),
                # Keys land where Faust and the Java client put them (murmur2), so the table
                # partition of a key is the same as the topic partition it is sent to.
                "partitioner": LIBRDKAFKA_PARTITIONER,
                # Retries keep each partition's order: the stages rely on per-key order.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                "message.timeout.ms": int(delivery_timeout_s * 1000),
            }
        )
        self.deliveries = Deliveries()
        """Whose the records queued now are: the stage sets it before handling a message."""
        self._poller: asyncio.Task[None] | None = None
        self._queued = asyncio.Event()
        """Set by every record queued: wakes a poller waiting with nothing under way."""

    def queue(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: dict[str, bytes] | None = None,
        *,
        partition: int | None = None,
        deliveries: Deliveries | None = None,
    ) -> None:
        """Queue one record, counted against ``deliveries`` (default: :attr:`deliveries`);
        ``partition`` None: the key's partition; ``value`` None: a tombstone."""
        wire_headers: dict[str, str | bytes | None] | None = {**headers} if headers else None
        deliveries = deliveries or self.deliveries
        # librdkafka's "unassigned" partition: the partitioner picks it from the key.
        where = -1 if partition is None else partition
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=wire_headers,
                    partition=where,
                    on_delivery=deliveries.delivered,
                )
                break
            except BufferError:
                # librdkafka's queue is full: serve delivery reports so that it drains.
                self._producer.poll(0.05)
        deliveries.sent()
        self._queued.set()

    def start_polling(self) -> None:
        """Serve delivery reports on the event loop (no other thread takes the GIL for them)."""
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        producer = self._producer
        queued = self._queued
        while True:
            producer.poll(0)
            if len(producer):
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            # Idle. A batch whose last records were queued just after this check waits for
            # their reports (its changelog, then its acknowledgements): the poller must not
            # sleep through them, or at low load every batch would wait a full idle interval.
            queued.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queued.wait(), IDLE_POLL_INTERVAL_S)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued; returns how many records are still undelivered."""
        if self._poller is not None:
            self._poller.cancel()
        return int(self._producer.flush(timeout_s))
