"""The pure core's ceiling: every stage's per-event work in memory, no Kafka, no Faust.

Each event is decoded from Avro as the worker gets it from its input topic and handled in
its identifier's partition, as an event keyed by the producer API is in the worker: what
the identity and profile steps (:class:`~streams.steps.engine.Engine`, as in the worker)
send each other is handled in place in that partition, and
encoded and decoded as on the internal topics when it is for another. The tables are read
and written through the worker's own :class:`~streams.runtime.pending.PendingWrites`, batch by
batch as a stage under a backlog seals them (``CDP_BATCH_MAX_MESSAGES`` messages fetched),
so a key is decoded once per batch and encoded once per batch that changed it, as in
RocksDB; outputs are encoded as on their topics. What the worker
reaches beyond this is lost to Kafka clients, Faust and the event loop; what this reaches
is the most a worker could do with the core as it is.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.codec import Codec
from streams.events import Event
from streams.identity.resolver import Owner, routing_key
from streams.partitioning import key_partition
from streams.profiles.model import StoredProfile, dump_stored, load_stored
from streams.runtime.pending import PendingWrites, Put
from streams.settings import Settings
from streams.steps.engine import Engine
from streams.steps.in_place import InPlace
from streams.steps.messages import (
    INTERNAL,
    OUTPUT_RECORDS,
    Out,
    RoutedEvent,
    Send,
    decode,
    encode,
)
from streams.steps.process import Rules


@dataclass
class CoreRun:
    events: int
    seconds: float
    ingest_s: float
    identity_s: float
    profile_s: float
    outputs: int

    def report(self) -> dict[str, float]:
        per_event_us = 1e6 / self.events
        return {
            "events": self.events,
            "events_per_s": self.events / self.seconds,
            "ingest_us_per_event": self.ingest_s * per_event_us,
            "identity_us_per_event": self.identity_s * per_event_us,
            "profile_us_per_event": self.profile_s * per_event_us,
            "outputs": self.outputs,
        }


class InMemoryPipeline:
    """The worker's stage over in-memory topics and tables, ``settings.partitions`` of them.

    As in the worker, a message for the partition being handled is handled in place
    (:class:`~streams.steps.in_place.InPlace`); one for another partition is encoded onto a
    queue, the internal topics' stand-in, and decoded from it.
    """

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec(settings.schemas_dir)
        self.output_format = settings.output_format
        rules = Rules.load(settings.segments_file, settings.journeys_file)
        self.partitions = settings.partitions
        self.batch_max_messages = settings.batch_max_messages
        self.identities: dict[bytes, bytes] = {}
        self.profiles: dict[bytes, bytes] = {}
        self.identity_table = PendingWrites(
            self.identities, Owner.decode, Owner.encode, _reader(self.identities)
        )
        self.profile_table = PendingWrites[StoredProfile](
            self.profiles, load_stored, dump_stored, _reader(self.profiles)
        )
        self.privacy: dict[bytes, bytes] = {}
        self.privacy_table = PendingWrites(self.privacy, bytes, bytes, _reader(self.privacy))
        self.topics: deque[tuple[Out, bytes, bytes, dict[str, bytes]]] = deque()
        self.engine = Engine(
            self.partitions,
            rules,
            self.identity_table,
            self.profile_table,
            privacy=self.privacy_table,
        )
        self.in_place = InPlace(self.partitions, self._apply, self._send, _held, _raise)
        self.seconds = {Out.IDENTITY: 0.0, Out.PROFILE: 0.0}
        self.outputs = 0

    def run(self, events: list[Event]) -> CoreRun:
        inputs = [(event.kind, self.codec.encode_event(event)) for event in events]
        ingest_s = 0.0
        fetched = 0
        started = time.perf_counter()
        for kind, value in inputs:
            began = time.perf_counter()
            event = self.codec.decode(kind, value)
            ingest_s += time.perf_counter() - began
            # Keyed by the producer API, an event arrives in its identifier's partition.
            routed = Send(Out.IDENTITY, routing_key(event), RoutedEvent(event))
            self.in_place.run(routed, {}, key_partition(routed.key.encode(), self.partitions))
            fetched += 1
            while self.topics:
                topic, key, value, headers = self.topics.popleft()
                began = time.perf_counter()
                message = decode(value, headers)
                self.seconds[topic] += time.perf_counter() - began
                partition = key_partition(key, self.partitions)
                self.in_place.run(Send(topic, key.decode(), message), {}, partition)
                fetched += 1
            if fetched >= self.batch_max_messages:
                self._write_batch()
                fetched = 0
        self._write_batch()
        seconds = time.perf_counter() - started
        identity_s, profile_s = self.seconds[Out.IDENTITY], self.seconds[Out.PROFILE]
        return CoreRun(len(events), seconds, ingest_s, identity_s, profile_s, self.outputs)

    def _apply(self, send: Send, headers: dict[str, bytes], partition: int) -> tuple[Send, ...]:
        began = time.perf_counter()
        sends = self.engine.handle(send, headers, partition)
        self.seconds[send.topic] += time.perf_counter() - began
        return sends

    def _write_batch(self) -> None:
        """What a stage does once a batch's sends are out: write each key it changed."""
        tables: tuple[tuple[Out, PendingWrites[Any], dict[bytes, bytes]], ...] = (
            (Out.IDENTITY, self.identity_table, self.identities),
            (Out.PROFILE, self.profile_table, self.profiles),
            (Out.IDENTITY, self.privacy_table, self.privacy),
        )
        for topic, table, values in tables:
            began = time.perf_counter()
            table.write(table.seal(), _writer(values))
            self.seconds[topic] += time.perf_counter() - began

    def _send(self, send: Send, headers: dict[str, bytes]) -> None:
        if send.topic in INTERNAL:
            value, own_headers = encode(send.message)
            self.topics.append((send.topic, send.key.encode(), value, own_headers))
        else:
            record = send.message.to_record()
            self.codec.encode_record(OUTPUT_RECORDS[send.topic], record, self.output_format)
            self.outputs += 1


def _reader(values: dict[bytes, bytes]) -> Callable[[bytes, int], bytes | None]:
    """Reads a key as a partition's database would; one dict holds every partition."""
    return lambda key, partition: values.get(key)


def _writer(values: dict[bytes, bytes]) -> Put:
    def put(key: bytes, value: bytes | None, partition: int) -> None:
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value

    return put


def _held(topic: Out, partition: int) -> bool:
    return True  # one process holds every partition


def _raise(send: Send, headers: dict[str, bytes], partition: int, exc: Exception) -> None:
    raise exc


def core_ceiling(events: list[Event], settings: Settings | None = None) -> dict[str, float]:
    """Events/s of the pure core over ``events`` (and µs per event in each stage)."""
    return InMemoryPipeline(settings or Settings()).run(events).report()
