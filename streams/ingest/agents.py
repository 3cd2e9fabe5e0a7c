"""Ingest: decode and validate every input message; route good events, dead-letter the rest."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.app import raw_topic
from streams.codec import DeadLetterReason, DecodeError
from streams.events import EventKind
from streams.identity.resolver import blocklist, routing_key, without_blocked
from streams.observability import IDENTIFIERS_BLOCKED
from streams.stages import RECEIVED_AT_HEADER, BatchedStage, send_dead_letter

if TYPE_CHECKING:
    from streams.app import Runtime


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    blocked = blocklist(settings.blocked_identifiers)
    kind_by_topic = {settings.input_topic(kind): kind for kind in EventKind}
    source = raw_topic(runtime.app, *kind_by_topic)
    identity_topic = runtime.identity_topic.get_topic_name()

    def handle(message: Message) -> None:
        try:
            event = runtime.codec.decode(kind_by_topic[message.topic], message.value)
        except DecodeError as exc:
            send_dead_letter(runtime, message, exc.reason, exc.detail)
            return
        identity, removed = without_blocked(event.identity, blocked)
        for kind in removed:
            IDENTIFIERS_BLOCKED.labels(kind.value).inc()
        if not identity.identifiers():
            send_dead_letter(
                runtime,
                message,
                DeadLetterReason.MISSING_IDENTITY,
                "every identifier is on the block list (CDP_BLOCKED_IDENTIFIERS)",
            )
            return
        if removed:
            event = dataclasses.replace(event, identity=identity)
        runtime.sender.queue(
            identity_topic,
            routing_key(event).encode(),
            event.to_wire(),
            {RECEIVED_AT_HEADER: str(message.timestamp).encode()},
        )

    stage = BatchedStage(runtime, list(kind_by_topic), handle)

    # The agent subscribes the worker to the topics; the stage takes their messages.
    @runtime.app.agent(source, name="ingest")
    async def ingest(stream: Any) -> None:
        await stage.run()
