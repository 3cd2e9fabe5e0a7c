"""Profile stage: the Faust shell around :func:`streams.profiles.steps.profile_step`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.codec import now_ms
from streams.identity.messages import Absorb, HandOver, InternalMessage, Out, RoutedEvent, decode
from streams.observability import (
    EVENT_TO_OUTPUT_SECONDS,
    EVENTS,
    IDENTIFIERS_PER_PROFILE,
    IDENTITY_LINKS_REFUSED,
    IDENTITY_MERGES,
    JOURNEY_TRIGGERS,
    PROFILE_FORWARDS,
    SEGMENT_CHANGES,
    SEGMENT_EVALUATION_ERRORS,
)
from streams.profiles.model import Forward, Profile, load_stored
from streams.profiles.steps import ProfileStep, profile_step
from streams.stages import (
    RECEIVED_AT_HEADER,
    BatchedStage,
    PendingWrites,
    headers_of,
    key_and_value,
    passed_on,
)

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    profiles = PendingWrites[Profile | Forward](runtime.profiles, load_stored, _encode)

    def count(message: InternalMessage, step: ProfileStep, headers: dict[str, bytes]) -> None:
        # Outputs are counted from what the step sends, so every path (events, merges,
        # hand-overs, releases) is counted the same way.
        for send in step.sends:
            if send.topic is Out.SEGMENT_CHANGES:
                SEGMENT_CHANGES.labels(send.message.segment, send.message.change).inc()
            elif send.topic is Out.JOURNEYS:
                JOURNEY_TRIGGERS.labels(send.message.journey).inc()
            elif send.topic is Out.IDENTITY_MERGES:
                IDENTITY_MERGES.inc()
        for reason in step.refused:
            IDENTITY_LINKS_REFUSED.labels(reason.value).inc()
        if step.forwarded:
            PROFILE_FORWARDS.inc()
        outcome = step.outcome
        if outcome is None:
            return
        for segment in outcome.evaluation_errors:
            SEGMENT_EVALUATION_ERRORS.labels(segment).inc()
        if outcome.claims or (isinstance(message, Absorb) and not outcome.duplicate):
            IDENTIFIERS_PER_PROFILE.observe(len(outcome.profile.identifier_keys()))
        if isinstance(message, RoutedEvent):
            topic = settings.input_topic(message.event.kind)
            EVENTS.labels(topic, "duplicate" if outcome.duplicate else "applied").inc()
            received_at = headers.get(RECEIVED_AT_HEADER)
            if received_at and not outcome.duplicate:
                EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, time.time() - float(received_at)))

    def handle(record: Message) -> None:
        key, value = key_and_value(record)
        headers = headers_of(record)
        message = decode(value, headers)
        stored = profiles.get(key, record.partition)
        step = profile_step(stored, key.decode(), message, runtime.rules, now_ms())
        for send in step.sends:
            runtime.queue(send, passed_on(headers))
        if step.store is not None:
            profiles.set(key, step.store, record)
        count(message, step, headers)
        if step.refused and isinstance(message, HandOver):
            log.info("refused to merge %s into %s: caps", key.decode(), message.claim.profile_id)

    stage = BatchedStage(runtime, [runtime.profile_topic.get_topic_name()], handle, (profiles,))

    # The agent subscribes the worker to the topic; the stage takes its messages.
    @runtime.app.agent(runtime.profile_topic, name="profiles")
    async def fold_profiles(stream: Any) -> None:
        await stage.run()


def _encode(stored: Profile | Forward) -> bytes:
    return stored.to_json()
