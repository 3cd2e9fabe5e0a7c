"""Profile stage: fold each event into its profile, then emit segment changes and triggers."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from streams import core
from streams.codec import DeadLetterReason, now_ms
from streams.events import Event
from streams.identity.agents import header
from streams.ingest.agents import RECEIVED_AT_HEADER, send_dead_letter
from streams.observability import (
    EVENT_TO_OUTPUT_SECONDS,
    EVENTS,
    JOURNEY_TRIGGERS,
    SEGMENT_CHANGES,
    SEGMENT_EVALUATION_ERRORS,
)
from streams.profiles.model import Profile

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    profiles = runtime.profiles

    async def fold(item: Any) -> None:
        event = Event.from_wire(item.value)
        profile_id = item.key.decode()
        stored: bytes | None = profiles.get(item.key)
        profile = Profile.from_json(stored) if stored is not None else None
        outcome = core.process(profile, profile_id, event, runtime.rules, now_ms())
        topic = settings.input_topic(event.kind)
        if outcome.duplicate:
            EVENTS.labels(topic, "duplicate").inc()
            return
        for change in outcome.segment_changes:
            await runtime.segment_changes_topic.send(
                key=item.key, value=runtime.encode_output("SegmentChange", change.to_record())
            )
            SEGMENT_CHANGES.labels(change.segment, change.change).inc()
        for trigger in outcome.triggers:
            await runtime.journeys_topic.send(
                key=item.key, value=runtime.encode_output("JourneyTrigger", trigger.to_record())
            )
            JOURNEY_TRIGGERS.labels(trigger.journey).inc()
        for segment in outcome.evaluation_errors:
            SEGMENT_EVALUATION_ERRORS.labels(segment).inc()
        profiles[item.key] = outcome.profile.to_json()
        EVENTS.labels(topic, "applied").inc()
        received_at = header(item, RECEIVED_AT_HEADER)
        if received_at:
            EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, time.time() - float(received_at)))

    @runtime.app.agent(runtime.profile_topic, name="profiles")
    async def fold_profiles(stream: Any) -> None:
        async for item in stream.events():
            try:
                await fold(item)
            except Exception as exc:
                # A bug for one event must not stop the partition, nor drop the event
                # silently the way Faust would: it goes to the dead letters with the reason.
                log.exception("processing failed for an event; dead-lettering it")
                await send_dead_letter(
                    runtime,
                    item.message,
                    DeadLetterReason.PROCESSING_ERROR,
                    f"{type(exc).__name__}: {exc}",
                )
