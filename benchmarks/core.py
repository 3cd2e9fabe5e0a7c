"""The pure core's ceiling: every stage's per-event work in memory, no Kafka, no Faust.

Each event is decoded from Avro as the identity stage gets it from its input topic and
resolved there, as an event keyed by its identifier is in the worker; every message the
identity and profile steps send each other is then encoded and decoded as on the internal
topics, table values are (de)serialised as in RocksDB and outputs encoded as on their
topics. What the worker reaches beyond this is lost to Kafka clients, Faust and the event
loop; what this reaches is the most a worker could do with the core as it is.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from streams.codec import Codec, now_ms
from streams.core import Rules
from streams.events import Event
from streams.identity.messages import (
    OUTPUT_RECORDS,
    InternalMessage,
    Out,
    RoutedEvent,
    Send,
    decode,
    encode,
)
from streams.identity.resolver import Owner, routing_key
from streams.identity.steps import identity_step
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
    """The three stages over in-memory queues and tables, one partition each."""

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec(settings.schemas_dir)
        self.output_format = settings.output_format
        self.rules = Rules.load(settings.segments_file, settings.journeys_file)
        self.identities: dict[bytes, bytes] = {}
        self.profiles: dict[bytes, bytes] = {}
        self.to_identity: deque[tuple[bytes, bytes, dict[str, bytes]]] = deque()
        self.to_profile: deque[tuple[bytes, bytes, dict[str, bytes]]] = deque()
        self.outputs = 0

    def run(self, events: list[Event]) -> CoreRun:
        inputs = [(event.kind, self.codec.encode_event(event)) for event in events]
        ingest_s = identity_s = profile_s = 0.0
        started = time.perf_counter()
        for kind, value in inputs:
            began = time.perf_counter()
            event = self.codec.decode(kind, value)
            ingest_s += time.perf_counter() - began
            began = time.perf_counter()
            self._resolve(routing_key(event).encode(), RoutedEvent(event))
            identity_s += time.perf_counter() - began
            while self.to_identity or self.to_profile:
                began = time.perf_counter()
                while self.to_identity:
                    self._identity(*self.to_identity.popleft())
                identity_s += time.perf_counter() - began
                began = time.perf_counter()
                if self.to_profile:
                    self._profile(*self.to_profile.popleft())
                profile_s += time.perf_counter() - began
        seconds = time.perf_counter() - started
        return CoreRun(len(events), seconds, ingest_s, identity_s, profile_s, self.outputs)

    def _identity(self, key: bytes, value: bytes, headers: dict[str, bytes]) -> None:
        self._resolve(key, decode(value, headers))

    def _resolve(self, key: bytes, message: InternalMessage) -> None:
        stored = self.identities.get(key)
        owner = Owner.decode(stored) if stored is not None else None
        step = identity_step(owner, key.decode(), message)
        self._send(step.sends)
        if step.store is not None:
            self.identities[key] = step.store.encode()

    def _profile(self, key: bytes, value: bytes, headers: dict[str, bytes]) -> None:
        stored = self.profiles.get(key)
        message: InternalMessage = decode(value, headers)
        step = profile_step(
            load_stored(stored) if stored is not None else None,
            key.decode(),
            message,
            self.rules,
            now_ms(),
        )
        self._send(step.sends)
        if step.store is not None:
            self.profiles[key] = step.store.to_json()

    def _send(self, sends: tuple[Send, ...]) -> None:
        for send in sends:
            if send.topic in (Out.IDENTITY, Out.PROFILE):
                value, headers = encode(send.message)
                queue = self.to_identity if send.topic is Out.IDENTITY else self.to_profile
                queue.append((send.key.encode(), value, headers))
            else:
                record = send.message.to_record()
                self.codec.encode_record(OUTPUT_RECORDS[send.topic], record, self.output_format)
                self.outputs += 1


def core_ceiling(events: list[Event], settings: Settings | None = None) -> dict[str, float]:
    """Events/s of the pure core over ``events`` (and µs per event in each stage)."""
    return InMemoryPipeline(settings or Settings()).run(events).report()
