"""The worker's stage: the input topics and both internal topics, partition by partition.

One :class:`~streams.runtime.stages.BatchedStage` takes every message of them. An input
message is checked (:mod:`streams.runtime.ingest_shell`) and its event resolved under its
strongest identifier; the steps' engine (:class:`~streams.steps.engine.Engine`) handles what
arrives on the internal topics, over the identity and profile tables. Whatever the steps send
each other is handled in place when it belongs to the partition being handled, and sent over
its topic when not (:mod:`streams.steps.in_place`). One stage, so each table has one writer
and one batch covers an event from its input to its outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from faust.types import Message

from streams.codec import DeadLetterReason
from streams.identity.resolver import Owner, routing_key
from streams.privacy.requests import (
    DEVELOPMENT_SALT,
    InvalidRequestError,
    PrivacyRequest,
)
from streams.profiles.model import StoredProfile, dump_stored, load_stored
from streams.runtime.context import Runtime, raw_topic
from streams.runtime.ingest_shell import inputs
from streams.runtime.metrics import INPUT_WAIT_SECONDS
from streams.runtime.pending import PendingWrites
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.runtime.rechecks import RecheckTimer
from streams.runtime.stages import (
    BatchedStage,
    dead_letter_failure,
    headers_of,
    key_and_value,
    send_dead_letter,
)
from streams.runtime.step_metrics import StepMetrics
from streams.settings import Settings
from streams.steps.engine import Engine
from streams.steps.in_place import RECEIVED_AT_HEADER, Headers
from streams.steps.messages import INTERNAL, Out, Request, RoutedEvent, Send, decode, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandledInPlace:
    """A message handled in place, in the shape of one fetched from its topic (for the
    dead letters); offset -1: it was never on the topic."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: Headers
    offset: int = -1


class HeldPartitions:
    """The partitions of each internal topic (and of its table) this worker holds now,
    read from the consumer's assignment once per consumer generation."""

    def __init__(self, runtime: Runtime) -> None:
        self._app = runtime.app
        self._internal = {runtime.internal_topic(out): out for out in INTERNAL}
        self._held: dict[Out, frozenset[int]] = {}
        self._generation: int | None = None

    def of(self, topic: Out) -> frozenset[int]:
        if self._generation != self._app.consumer_generation_id:
            self._generation = self._app.consumer_generation_id
            assignment = self._app.consumer.assignment()
            self._held = {
                out: frozenset(tp.partition for tp in assignment if tp.topic == name)
                for name, out in self._internal.items()
            }
        return self._held[topic]

    def holds(self, topic: Out, partition: int) -> bool:
        return partition in self.of(topic)


class Pipeline:
    """Routes each fetched message to the engine, in place where it can."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.checked = inputs(runtime)
        self.rechecks = RecheckSchedule()
        self.journey_timers = RecheckSchedule()
        self.expiries = RecheckSchedule()
        self.identities = PendingWrites(runtime.identities, Owner.decode, Owner.encode)
        self.profiles = PendingWrites[StoredProfile](runtime.profiles, load_stored, dump_stored)
        self.privacy = PendingWrites[bytes](runtime.privacy, bytes, bytes)
        self.engine = Engine(
            runtime.settings.partitions,
            runtime.rules,
            self.identities,
            self.profiles,
            StepMetrics(
                runtime.settings,
                self.rechecks,
                self.journey_timers,
                self.expiries,
                runtime.rules.retention,
            ),
            privacy=self.privacy,
            salt=privacy_salt(runtime.settings),
        )
        self.held = HeldPartitions(runtime)
        self.in_place = self.engine.in_place(runtime.queue, self.held.holds, self.failed)
        self.internal = {runtime.internal_topic(out): out for out in INTERNAL}
        self.requests_topic = runtime.settings.privacy_requests_topic
        self.stage = BatchedStage(
            runtime,
            [*self.internal, *self.checked.topics, self.requests_topic],
            self.handle,
            (self.identities, self.profiles, self.privacy),
            # Work under way (an event's next hop, an erasure) before new input.
            first=(*self.internal, self.requests_topic),
        )

    def handle(self, record: Message) -> None:
        out = self.internal.get(record.topic)
        if out is not None:
            key, value = key_and_value(record)
            headers = headers_of(record)
            send = Send(out, key.decode(), decode(value, headers))
            self.in_place.run(send, headers, record.partition)
            return
        if record.topic == self.requests_topic:
            self.take_request(record)
            return
        INPUT_WAIT_SECONDS.observe(max(0.0, time.time() - record.timestamp))
        event = self.checked.accept(record)
        if event is None:
            return
        # The input's append time travels along, for event-to-output latency.
        headers = {RECEIVED_AT_HEADER: str(record.timestamp).encode()}
        routed = Send(Out.IDENTITY, routing_key(event), RoutedEvent(event))
        self.route(routed, headers, record.partition)

    def route(self, send: Send, headers: Headers, partition: int) -> None:
        """Handle what an input message leads to in place, or send it to its partition."""
        if self.in_place.belongs_to(send, partition):
            self.in_place.run(send, headers, partition)
        else:
            self.runtime.queue(send, headers)

    def take_request(self, record: Message) -> None:
        """A privacy request: opened under its id (in its identifier's partition)."""
        try:
            request = PrivacyRequest.from_bytes(record.value or b"")
        except InvalidRequestError as exc:
            send_dead_letter(self.runtime, record, DeadLetterReason.SCHEMA_VIOLATION, str(exc))
            return
        message = Request(request.request_id, request.type, request.identifier, request.received_at)
        self.route(Send(Out.IDENTITY, request.request_id, message), {}, record.partition)

    def failed(self, send: Send, headers: Headers, partition: int, exc: Exception) -> None:
        """A message handled in place after the one fetched raised: dead-letter it alone."""
        value, own_headers = encode(send.message)
        message = HandledInPlace(
            self.runtime.internal_topic(send.topic),
            partition,
            send.key.encode(),
            value,
            {**headers, **own_headers},
        )
        dead_letter_failure(self.runtime, message, exc)


def privacy_salt(settings: Settings) -> str:
    """``CDP_PRIVACY_SALT``, or the public development salt, with a warning."""
    if settings.privacy_salt is not None:
        return settings.privacy_salt.get_secret_value()
    log.warning(
        "CDP_PRIVACY_SALT is not set: identifiers in the privacy table are hashed with the "
        "public development salt; set a secret one in production"
    )
    return DEVELOPMENT_SALT


def install(runtime: Runtime) -> Pipeline:
    """Subscribe the worker to the topics, the stage taking their messages, and start the
    segment recheck timer."""
    pipeline = Pipeline(runtime)
    app = runtime.app
    timer = RecheckTimer(
        runtime,
        pipeline.rechecks,
        pipeline.stage,
        pipeline.in_place.run,
        pipeline.held.of,
        pipeline.journey_timers,
        pipeline.expiries,
    )
    app.task(timer.run)
    app.task(timer.run_backfill)

    async def take_messages(stream: Any) -> None:
        await pipeline.stage.run()

    app.agent(runtime.identity_topic, name="identity")(take_messages)
    app.agent(runtime.profile_topic, name="profiles")(take_messages)
    app.agent(pipeline.checked.source, name="ingest")(take_messages)
    requests = raw_topic(app, pipeline.requests_topic)
    app.agent(requests, name="privacy-requests")(take_messages)
    return pipeline
