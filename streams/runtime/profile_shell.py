"""Profile shell: the profile table around :func:`streams.steps.profile.profile_step`.

:mod:`streams.runtime.pipeline` hands it every message for a profile in a partition this worker
holds, from the internal profile topic or in place; it is the one writer of the profile
table, and counts what the steps decide.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from streams.events import now_ms
from streams.profiles.model import Forward, Profile, dump_stored, load_stored
from streams.runtime.metrics import (
    EVENT_TO_OUTPUT_SECONDS,
    EVENTS,
    IDENTIFIERS_PER_PROFILE,
    IDENTITY_LINKS_REFUSED,
    IDENTITY_MERGES,
    JOURNEY_TRIGGERS,
    PROFILE_FORWARDS,
    SEGMENT_CHANGES,
    SEGMENT_EVALUATION_ERRORS,
    SEGMENT_RECHECKS,
)
from streams.runtime.pending import PendingWrites
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.steps.in_place import RECEIVED_AT_HEADER, Headers
from streams.steps.messages import Absorb, HandOver, InternalMessage, Out, RoutedEvent, Send
from streams.steps.profile import ProfileStep, Recheck, profile_step

if TYPE_CHECKING:
    from streams.runtime.app import Runtime

log = logging.getLogger(__name__)


class ProfileShell:
    def __init__(self, runtime: Runtime, rechecks: RecheckSchedule) -> None:
        self.table = PendingWrites[Profile | Forward](runtime.profiles, load_stored, dump_stored)
        self._rechecks = rechecks
        self._runtime = runtime

    def handle(
        self, profile_id: str, message: InternalMessage | Recheck, headers: Headers, partition: int
    ) -> tuple[Send, ...]:
        """Apply ``message`` to ``profile_id``, which lives in ``partition``; its sends."""
        key = profile_id.encode()
        stored = self.table.get(key, partition)
        step = profile_step(stored, profile_id, message, self._runtime.rules, now_ms())
        if step.store is not None:
            self.table.set(key, step.store, partition)
            store = step.store
            at = store.segment_recheck_at if isinstance(store, Profile) else None
            self._rechecks.set(partition, profile_id, at)
        self._count(message, step, headers)
        if step.refused and isinstance(message, HandOver):
            log.info("refused to merge %s into %s: caps", profile_id, message.claim.profile_id)
        return step.sends

    def _count(
        self, message: InternalMessage | Recheck, step: ProfileStep, headers: Headers
    ) -> None:
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
        if isinstance(message, Recheck):
            evaluated = outcome is not None and not outcome.duplicate
            SEGMENT_RECHECKS.labels("evaluated" if evaluated else "stale").inc()
        if outcome is None:
            return
        for segment in outcome.evaluation_errors:
            SEGMENT_EVALUATION_ERRORS.labels(segment).inc()
        if outcome.claims or (isinstance(message, Absorb) and not outcome.duplicate):
            IDENTIFIERS_PER_PROFILE.observe(len(outcome.profile.identifier_keys()))
        if isinstance(message, RoutedEvent):
            topic = self._runtime.settings.input_topic(message.event.kind)
            EVENTS.labels(topic, "duplicate" if outcome.duplicate else "applied").inc()
            received_at = headers.get(RECEIVED_AT_HEADER)
            if received_at and not outcome.duplicate:
                EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, time.time() - float(received_at)))
