"""Ingest: decode and validate every input message; route good events, dead-letter the rest."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from streams.app import raw_topic
from streams.codec import DeadLetterReason, DecodeError, dead_letter_record, now_ms
from streams.events import EventKind
from streams.identity.resolver import blocklist, routing_key, without_blocked
from streams.observability import DEAD_LETTERS, EVENTS, IDENTIFIERS_BLOCKED

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)

RECEIVED_AT_HEADER = "cdp-received-at"


def headers_of(carrier: Any) -> dict[str, bytes]:
    """The headers of a Faust event or message; aiokafka hands them over as pairs, Faust as
    a dict."""
    headers = carrier.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {key: bytes(value) for key, value in pairs}


async def send_dead_letter(
    runtime: Runtime, message: Any, reason: DeadLetterReason, detail: str
) -> None:
    """Dead-letter ``message`` (a Faust Message) with its original bytes and where it came from."""
    record = dead_letter_record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        detail=detail,
        now_ms=now_ms(),
        headers=headers_of(message),
    )
    await runtime.dead_letter_topic.send(
        key=message.key, value=runtime.encode_output("DeadLetter", record)
    )
    DEAD_LETTERS.labels(reason.value).inc()
    EVENTS.labels(message.topic, "dead_lettered").inc()


async def dead_letter_on_error(
    runtime: Runtime, item: Any, handle: Callable[[Any], Awaitable[None]]
) -> None:
    """Handle one message; should that fail, dead-letter it instead of stopping.

    A bug for one message must not stop the partition, nor drop the message silently the
    way Faust would: it goes to the dead letters with the reason.
    """
    try:
        await handle(item)
    except Exception as exc:
        # The frames only: an exception's message may quote personal data from the event.
        message = item.message
        log.error(
            "processing failed for the message at %s[%s]@%s (%s); dead-lettered\n%s",
            message.topic,
            message.partition,
            message.offset,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        await send_dead_letter(
            runtime,
            item.message,
            DeadLetterReason.PROCESSING_ERROR,
            f"{type(exc).__name__}: {exc}",
        )


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    blocked = blocklist(settings.blocked_identifiers)
    kind_by_topic = {settings.input_topic(kind): kind for kind in EventKind}
    source = raw_topic(runtime.app, *kind_by_topic)

    @runtime.app.agent(source, name="ingest")
    async def ingest(stream: Any) -> None:
        async for item in stream.events():
            message = item.message
            try:
                event = runtime.codec.decode(kind_by_topic[message.topic], message.value)
            except DecodeError as exc:
                await send_dead_letter(runtime, message, exc.reason, exc.detail)
                continue
            identity, removed = without_blocked(event.identity, blocked)
            for kind in removed:
                IDENTIFIERS_BLOCKED.labels(kind.value).inc()
            if not identity.identifiers():
                await send_dead_letter(
                    runtime,
                    message,
                    DeadLetterReason.MISSING_IDENTITY,
                    "every identifier is on the block list (CDP_BLOCKED_IDENTIFIERS)",
                )
                continue
            if removed:
                event = dataclasses.replace(event, identity=identity)
            # The input's append time travels along so the last stage can measure
            # event-to-output latency across both hops.
            await runtime.identity_topic.send(
                key=routing_key(event).encode(),
                value=event.to_wire(),
                headers={RECEIVED_AT_HEADER: str(message.timestamp).encode()},
            )
