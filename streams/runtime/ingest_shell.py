"""Ingest: decode and validate every input message; good events go on, the rest are
dead-lettered.

The worker's stage runs this on the input topics' messages and resolves the events
(:mod:`streams.runtime.pipeline`), so an event whose identifier lives in the partition it arrived on
is handled there, with no hop over an internal topic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.codec import DeadLetterReason, DecodeError
from streams.events import Event, EventKind
from streams.identity.resolver import blocklist, without_blocked
from streams.runtime.context import raw_topic
from streams.runtime.metrics import IDENTIFIERS_BLOCKED
from streams.runtime.stages import send_dead_letter

if TYPE_CHECKING:
    from streams.runtime.context import Runtime


@dataclass(frozen=True)
class Inputs:
    topics: list[str]
    source: Any
    """The Faust topic of all of them, for the agent that subscribes the worker to them."""
    accept: Callable[[Message], Event | None]
    """The message's event, ready to route; None when it was dead-lettered."""


def inputs(runtime: Runtime) -> Inputs:
    settings = runtime.settings
    blocked = blocklist(settings.blocked_identifiers)
    kind_by_topic = {settings.input_topic(kind): kind for kind in EventKind}

    def accept(message: Message) -> Event | None:
        try:
            event = runtime.codec.decode(kind_by_topic[message.topic], message.value)
        except DecodeError as exc:
            send_dead_letter(runtime, message, exc.reason, exc.detail)
            return None
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
            return None
        return dataclasses.replace(event, identity=identity) if removed else event

    topics = list(kind_by_topic)
    return Inputs(topics, raw_topic(runtime.app, *topics), accept)
