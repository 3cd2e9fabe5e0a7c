"""The worker's stage: the input topics and both internal topics, partition by partition.

One :class:`~streams.runtime.stages.BatchedStage` takes every message of them. An input message is
checked (:mod:`streams.runtime.ingest_shell`) and its event resolved under its strongest
identifier; the identity and profile shells handle what arrives on the internal topics.
Whatever the steps send each other is handled in place when it belongs to the partition
being handled, and sent over its topic when not (:mod:`streams.steps.in_place`). One stage, so
each table has one writer and one batch covers an event from its input to its outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.identity.resolver import routing_key
from streams.runtime.identity_shell import IdentityShell
from streams.runtime.ingest_shell import inputs
from streams.runtime.metrics import INPUT_WAIT_SECONDS
from streams.runtime.profile_shell import ProfileShell
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.runtime.rechecks import RecheckTimer
from streams.runtime.stages import BatchedStage, dead_letter_failure, headers_of, key_and_value
from streams.steps.in_place import RECEIVED_AT_HEADER, Headers, InPlace
from streams.steps.messages import INTERNAL, Out, RoutedEvent, Send, decode, encode

if TYPE_CHECKING:
    from streams.runtime.app import Runtime


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


def install(runtime: Runtime) -> None:
    app = runtime.app
    checked = inputs(runtime)
    identities = IdentityShell(runtime)
    rechecks = RecheckSchedule()
    profiles = ProfileShell(runtime, rechecks)
    internal = {runtime.internal_topic(out): out for out in INTERNAL}
    held: dict[Out, frozenset[int]] = {}
    held_in: int | None = None  # the consumer generation ``held`` is of

    def held_partitions(topic: Out) -> frozenset[int]:
        """The partitions of the internal topic ``topic`` (and of its table) held now."""
        nonlocal held_in
        if held_in != app.consumer_generation_id:
            held_in = app.consumer_generation_id
            assignment = app.consumer.assignment()
            held.clear()
            for name, out in internal.items():
                held[out] = frozenset(tp.partition for tp in assignment if tp.topic == name)
        return held[topic]

    def holds(topic: Out, partition: int) -> bool:
        return partition in held_partitions(topic)

    def apply(send: Send, headers: Headers, partition: int) -> tuple[Send, ...]:
        if send.topic is Out.IDENTITY:
            return identities.handle(send.key, send.message, partition)
        return profiles.handle(send.key, send.message, headers, partition)

    def failed(send: Send, headers: Headers, partition: int, exc: Exception) -> None:
        value, own_headers = encode(send.message)
        message = HandledInPlace(
            runtime.internal_topic(send.topic),
            partition,
            send.key.encode(),
            value,
            {**headers, **own_headers},
        )
        dead_letter_failure(runtime, message, exc)

    in_place = InPlace(runtime.settings.partitions, apply, runtime.queue, holds, failed)

    def handle(record: Message) -> None:
        out = internal.get(record.topic)
        if out is not None:
            key, value = key_and_value(record)
            headers = headers_of(record)
            in_place.run(Send(out, key.decode(), decode(value, headers)), headers, record.partition)
            return
        INPUT_WAIT_SECONDS.observe(max(0.0, time.time() - record.timestamp))
        event = checked.accept(record)
        if event is None:
            return
        # The input's append time travels along, for event-to-output latency.
        headers = {RECEIVED_AT_HEADER: str(record.timestamp).encode()}
        routed = Send(Out.IDENTITY, routing_key(event), RoutedEvent(event))
        if in_place.belongs_to(routed, record.partition):
            in_place.run(routed, headers, record.partition)
        else:
            runtime.queue(routed, headers)

    stage = BatchedStage(
        runtime, [*internal, *checked.topics], handle, (identities.table, profiles.table)
    )

    timer = RecheckTimer(runtime, rechecks, stage, in_place.run, held_partitions)
    app.task(timer.run)

    # The agents subscribe the worker to the topics; the stage takes their messages.
    @app.agent(runtime.identity_topic, name="identity")
    async def resolve_identities(stream: Any) -> None:
        await stage.run()

    @app.agent(runtime.profile_topic, name="profiles")
    async def fold_profiles(stream: Any) -> None:
        await stage.run()

    @app.agent(checked.source, name="ingest")
    async def ingest(stream: Any) -> None:
        await stage.run()
