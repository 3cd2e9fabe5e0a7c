"""Identity stage: the Faust shell around :func:`streams.identity.steps.identity_step`.

The stage is the one writer of the identity table. It takes the commands on the internal
identity topic and the input topics' events (checked by :mod:`streams.ingest.agents`). An
event is resolved under its strongest identifier, whose table partition is that
identifier's partition of the identity topic. When that is the partition the event arrived
on, and this worker holds it, the event is resolved at once; otherwise it is sent over the
identity topic to the worker that holds the identifier. The producer API keys events by
that identifier, so its events take no hop; an event keyed otherwise takes one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.identity.messages import Claim, InternalMessage, RoutedEvent, decode
from streams.identity.resolver import Owner, redacted, routing_key
from streams.identity.steps import identity_step
from streams.ingest.agents import Inputs
from streams.observability import IDENTITY_LINKS, IDENTITY_LINKS_REFUSED
from streams.stages import (
    RECEIVED_AT_HEADER,
    BatchedStage,
    PendingWrites,
    headers_of,
    key_and_value,
    key_partition,
    passed_on,
)

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def install(runtime: Runtime, inputs: Inputs) -> None:
    app = runtime.app
    identities = PendingWrites(runtime.identities, Owner.decode, Owner.encode)
    identity_topic = runtime.identity_topic.get_topic_name()
    partitions = runtime.settings.partitions
    held: frozenset[int] = frozenset()
    held_in: int | None = None  # the consumer generation ``held`` is of

    def holds(partition: int) -> bool:
        """Whether this worker holds the identity topic's (and table's) ``partition``."""
        nonlocal held, held_in
        if held_in != app.consumer_generation_id:
            held_in = app.consumer_generation_id
            held = frozenset(
                tp.partition for tp in app.consumer.assignment() if tp.topic == identity_topic
            )
        return partition in held

    def resolve(
        record: Message, key: bytes, message: InternalMessage, headers: dict[str, bytes]
    ) -> None:
        """Apply ``message`` about identifier ``key``, which lives in ``record``'s partition."""
        identifier = key.decode()
        step = identity_step(identities.get(key, record.partition), identifier, message)
        for send in step.sends:
            runtime.queue(send, passed_on(headers))
        if step.store is not None:
            identities.set(key, step.store, record)
        if step.claim_outcome is not None:
            IDENTITY_LINKS.labels(step.claim_outcome.value).inc()
        if step.refused is not None and isinstance(message, Claim):
            IDENTITY_LINKS_REFUSED.labels(step.refused.value).inc()
            log.info(
                "refused %s to %s: %s (cause %s)",
                redacted(identifier),
                message.profile_id,
                step.refused.value,
                message.cause.event_id,
            )

    def handle(record: Message) -> None:
        if record.topic == identity_topic:
            key, value = key_and_value(record)
            headers = headers_of(record)
            resolve(record, key, decode(value, headers), headers)
            return
        event = inputs.accept(record)
        if event is None:
            return
        key = routing_key(event).encode()
        # The input's append time travels along, for event-to-output latency.
        received_at = {RECEIVED_AT_HEADER: str(record.timestamp).encode()}
        partition = key_partition(key, partitions)
        if partition == record.partition and holds(partition):
            resolve(record, key, RoutedEvent(event), received_at)
        else:
            runtime.sender.queue(identity_topic, key, event.to_wire(), received_at)

    stage = BatchedStage(runtime, [identity_topic, *inputs.topics], handle, (identities,))

    # The agents subscribe the worker to the topics; the stage takes their messages.
    @app.agent(runtime.identity_topic, name="identity")
    async def identity(stream: Any) -> None:
        await stage.run()

    @app.agent(inputs.source, name="ingest")
    async def ingest(stream: Any) -> None:
        await stage.run()
