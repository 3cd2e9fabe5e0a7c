"""What the worker does beside each identity and profile step: count it, log refusals, and
keep each profile's recheck time.

The engine (:class:`~streams.steps.engine.Engine`) calls :class:`StepMetrics` after every
step it takes, in place or from an internal topic, so every path (events, merges,
hand-overs, releases, rechecks) is counted the same way. Nothing here carries personal
data: identifiers reach the log only redacted.
"""

from __future__ import annotations

import logging
import time

from streams.events import now_ms
from streams.identity.resolver import redacted
from streams.profiles.model import Profile
from streams.profiles.retention import DEFAULT_RETENTION, Retention, expires_at
from streams.runtime.metrics import (
    BACKFILL_EVALUATED,
    ERASED_EVENTS_DROPPED,
    ERASURE_DURATION_SECONDS,
    EVENT_TO_OUTPUT_SECONDS,
    EVENTS,
    EXPIRED_PROFILES,
    IDENTIFIERS_PER_PROFILE,
    IDENTITY_LINKS,
    IDENTITY_LINKS_REFUSED,
    IDENTITY_MERGES,
    JOURNEY_EVENTS,
    JOURNEY_TIMERS_PENDING,
    JOURNEY_TRIGGERS,
    PRIVACY_OLDEST_OPEN_REQUEST_AGE_SECONDS,
    PRIVACY_OPEN_REQUEST_BOUND_SECONDS,
    PRIVACY_REQUESTS,
    PROFILE_FORWARDS,
    SEGMENT_CHANGES,
    SEGMENT_EVALUATION_ERRORS,
    SEGMENT_RECHECKS,
    SUPPRESSED_EVENTS,
)
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.settings import Settings
from streams.steps.identity import IdentityStep
from streams.steps.in_place import RECEIVED_AT_HEADER, Headers
from streams.steps.messages import Absorb, Claim, HandOver, Out, RoutedEvent, Send
from streams.steps.privacy import PrivacyStep
from streams.steps.profile import Backfill, ProfileStep, Recheck

log = logging.getLogger(__name__)


class StepMetrics:
    def __init__(
        self,
        settings: Settings,
        rechecks: RecheckSchedule,
        journey_timers: RecheckSchedule | None = None,
        expiries: RecheckSchedule | None = None,
        retention: Retention = DEFAULT_RETENTION,
    ) -> None:
        self._settings = settings
        self._rechecks = rechecks
        # Only counted (the gauge): the profile's wake time in `rechecks` runs them.
        self._journey_timers = RecheckSchedule() if journey_timers is None else journey_timers
        self._expiries = RecheckSchedule() if expiries is None else expiries
        self._retention = retention
        # Privacy requests opened here and not completed yet: id -> received at (ms).
        self._open_requests: dict[str, int] = {}
        PRIVACY_OPEN_REQUEST_BOUND_SECONDS.set(settings.privacy_request_bound.total_seconds())
        PRIVACY_OLDEST_OPEN_REQUEST_AGE_SECONDS.set_function(self._oldest_open_request_age)

    def _oldest_open_request_age(self) -> float:
        oldest = min(self._open_requests.values(), default=None)
        return 0.0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000)

    def privacy_stepped(self, send: Send, step: PrivacyStep, partition: int) -> None:
        opened, closed = step.opened, step.closed
        if opened is not None:
            PRIVACY_REQUESTS.labels(opened.type.value, opened.status.value).inc()
            self._open_requests[opened.request_id] = opened.received_at
        if closed is not None:
            PRIVACY_REQUESTS.labels(closed.type.value, closed.status.value).inc()
            ERASURE_DURATION_SECONDS.labels(closed.type.value).observe(
                (closed.duration_ms or 0) / 1000
            )
            self._open_requests.pop(closed.request_id, None)
            # Ids and times only: the request's identifier is not kept anywhere.
            log.info(
                "privacy request %s (%s) completed in %s ms",
                closed.request_id,
                closed.type.value,
                closed.duration_ms,
            )

    def suppressed(self, send: Send, partition: int) -> None:
        SUPPRESSED_EVENTS.inc()

    def dropped_as_erased(self, send: Send, partition: int) -> None:
        ERASED_EVENTS_DROPPED.inc()

    def identity_stepped(self, send: Send, step: IdentityStep, partition: int) -> None:
        message = send.message
        if step.claim_outcome is not None:
            IDENTITY_LINKS.labels(step.claim_outcome.value).inc()
        if step.refused is not None and isinstance(message, Claim):
            IDENTITY_LINKS_REFUSED.labels(step.refused.value).inc()
            log.info(
                "refused %s to %s: %s (cause %s)",
                redacted(send.key),
                message.profile_id,
                step.refused.value,
                message.cause.event_id,
            )

    def profile_stepped(
        self, send: Send, step: ProfileStep, headers: Headers, partition: int
    ) -> None:
        message = send.message
        store = step.store
        if store is not None or step.delete:
            # An erased profile's timers go with it; its mark is forgotten in time.
            profile = store if isinstance(store, Profile) else None
            wake = None if profile is None else profile.wake_at
            due = None if profile is None else profile.journey_due_at
            expiry = None if store is None else expires_at(store, self._retention)
            self._rechecks.set(partition, send.key, wake)
            self._journey_timers.set(partition, send.key, due)
            self._expiries.set(partition, send.key, expiry)
            JOURNEY_TIMERS_PENDING.set(len(self._journey_timers))
        if step.refused and isinstance(message, HandOver):
            log.info("refused to merge %s into %s: caps", send.key, message.claim.profile_id)
        for sent in step.sends:
            if sent.topic is Out.SEGMENT_CHANGES:
                SEGMENT_CHANGES.labels(sent.message.segment, sent.message.change).inc()
            elif sent.topic is Out.JOURNEYS:
                JOURNEY_TRIGGERS.labels(sent.message.journey).inc()
            elif sent.topic is Out.JOURNEY_EVENTS:
                event = sent.message
                reason = "" if event.reason is None else event.reason.value
                step_label = event.step or ""
                JOURNEY_EVENTS.labels(event.journey, step_label, event.kind.value, reason).inc()
            elif sent.topic is Out.IDENTITY_MERGES:
                IDENTITY_MERGES.inc()
            elif sent.topic is Out.PRIVACY_EVENTS and sent.message.type == "expired":
                EXPIRED_PROFILES.labels("anonymous" if sent.message.anonymous else "known").inc()
        for reason in step.refused:
            IDENTITY_LINKS_REFUSED.labels(reason.value).inc()
        if step.forwarded:
            PROFILE_FORWARDS.inc()
        outcome = step.outcome
        evaluated = outcome is not None and not outcome.duplicate
        if isinstance(message, Recheck):
            SEGMENT_RECHECKS.labels("evaluated" if evaluated else "stale").inc()
        elif isinstance(message, Backfill) and evaluated:
            BACKFILL_EVALUATED.inc()
        if outcome is None:
            return
        for segment in outcome.evaluation_errors:
            SEGMENT_EVALUATION_ERRORS.labels(segment).inc()
        if outcome.claims or (isinstance(message, Absorb) and not outcome.duplicate):
            IDENTIFIERS_PER_PROFILE.observe(len(outcome.profile.identifier_keys()))
        if isinstance(message, RoutedEvent):
            topic = self._settings.input_topic(message.event.kind)
            EVENTS.labels(topic, "duplicate" if outcome.duplicate else "applied").inc()
            received_at = headers.get(RECEIVED_AT_HEADER)
            if received_at and not outcome.duplicate:
                EVENT_TO_OUTPUT_SECONDS.observe(max(0.0, time.time() - float(received_at)))
