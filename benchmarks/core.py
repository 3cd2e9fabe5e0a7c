"""The pure core's ceiling: every stage's per-event work in memory, no Kafka, no Faust.

Each event is decoded from Avro as the worker gets it from its input topic and handled in
its identifier's partition, as an event keyed by the producer API is in the worker: what
the identity and profile steps send each other is handled in place in that partition, and
encoded and decoded as on the internal topics when it is for another. Table values are
(de)serialised as in RocksDB and outputs encoded as on their topics. What the worker
reaches beyond this is lost to Kafka clients, Faust and the event loop; what this reaches
is the most a worker could do with the core as it is.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from streams.codec import Codec, now_ms
from streams.core import Rules
from streams.delivery import InPlace
from streams.events import Event
from streams.identity.messages import (
    INTERNAL,
    OUTPUT_RECORDS,
    Out,
    RoutedEvent,
    Send,
    decode,
    encode,
)
from streams.identity.resolver import Owner, routing_key
from streams.identity.steps import identity_step
from streams.partitioning import key_partition
from streams.profiles.model import load_stored
from streams.profiles.steps import profile_step
from streams.settings import Settings


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
    (:class:`~streams.delivery.InPlace`); one for another partition is encoded onto a
    queue, the internal topics' stand-in, and decoded from it.
    """

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec(settings.schemas_dir)
        self.output_format = settings.output_format
        self.rules = Rules.load(settings.segments_file, settings.journeys_file)
        self.partitions = settings.partitions
        self.identities: dict[bytes, bytes] = {}
        self.profiles: dict[bytes, bytes] = {}
        self.topics: deque[tuple[Out, bytes, bytes, dict[str, bytes]]] = deque()
        self.in_place = InPlace(self.partitions, self._apply, self._send, _held, _raise)
        self.seconds = {Out.IDENTITY: 0.0, Out.PROFILE: 0.0}
        self.outputs = 0

    def run(self, events: list[Event]) -> CoreRun:
        inputs = [(event.kind, self.codec.encode_event(event)) for event in events]
        ingest_s = 0.0
        started = time.perf_counter()
        for kind, value in inputs:
            began = time.perf_counter()
            event = self.codec.decode(kind, value)
            ingest_s += time.perf_counter() - began
            # Keyed by the producer API, an event arrives in its identifier's partition.
            routed = Send(Out.IDENTITY, routing_key(event), RoutedEvent(event))
            self.in_place.run(routed, {}, key_partition(routed.key.encode(), self.partitions))
            while self.topics:
                topic, key, value, headers = self.topics.popleft()
                began = time.perf_counter()
                message = decode(value, headers)
                self.seconds[topic] += time.perf_counter() - began
                partition = key_partition(key, self.partitions)
                self.in_place.run(Send(topic, key.decode(), message), {}, partition)
        seconds = time.perf_counter() - started
        identity_s, profile_s = self.seconds[Out.IDENTITY], self.seconds[Out.PROFILE]
        return CoreRun(len(events), seconds, ingest_s, identity_s, profile_s, self.outputs)

    def _apply(self, send: Send, headers: dict[str, bytes], partition: int) -> tuple[Send, ...]:
        began = time.perf_counter()
        key = send.key.encode()
        if send.topic is Out.IDENTITY:
            stored = self.identities.get(key)
            owner = Owner.decode(stored) if stored is not None else None
            identity = identity_step(owner, send.key, send.message, self.partitions)
            if identity.store is not None:
                self.identities[key] = identity.store.encode()
            sends = identity.sends
        else:
            value = self.profiles.get(key)
            stored_profile = load_stored(value) if value is not None else None
            profile = profile_step(stored_profile, send.key, send.message, self.rules, now_ms())
            if profile.store is not None:
                self.profiles[key] = profile.store.to_json()
            sends = profile.sends
        self.seconds[send.topic] += time.perf_counter() - began
        return sends

    def _send(self, send: Send, headers: dict[str, bytes]) -> None:
        if send.topic in INTERNAL:
            value, own_headers = encode(send.message)
            self.topics.append((send.topic, send.key.encode(), value, own_headers))
        else:
            record = send.message.to_record()
            self.codec.encode_record(OUTPUT_RECORDS[send.topic], record, self.output_format)
            self.outputs += 1


def _held(topic: Out, partition: int) -> bool:
    return True  # one process holds every partition


def _raise(send: Send, headers: dict[str, bytes], partition: int, exc: Exception) -> None:
    raise exc


def core_ceiling(events: list[Event], settings: Settings | None = None) -> dict[str, float]:
    """Events/s of the pure core over ``events`` (and µs per event in each stage)."""
    return InMemoryPipeline(settings or Settings()).run(events).report()
