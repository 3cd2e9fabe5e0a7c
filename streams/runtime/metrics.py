"""Prometheus metrics (``cdp_`` prefix) and the health/readiness state of a worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

REGISTRY = CollectorRegistry(auto_describe=True)

# Buckets reach from sub-millisecond lookups to multi-second stalls.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# An event's way to its outputs is judged at tens of milliseconds (the 100 ms target at
# 2,000 events/s), so its histograms are finer there.
_EVENT_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

EVENTS = Counter(
    "cdp_events_total",
    "Input events by topic and outcome (applied, duplicate, dead_lettered).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "cdp_dead_letters_total",
    "Events sent to the dead-letter topic, by reason.",
    ["reason"],
    registry=REGISTRY,
)
SEGMENT_CHANGES = Counter(
    "cdp_segment_changes_total",
    "Segment entries and exits, by segment and change.",
    ["segment", "change"],
    registry=REGISTRY,
)
SEGMENT_RECHECKS = Counter(
    "cdp_segment_rechecks_total",
    "Profiles re-evaluated without an event because their recheck time came: evaluated, or"
    " stale (an event or a merge evaluated the profile since).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("evaluated", "stale"):
    SEGMENT_RECHECKS.labels(_outcome)
SEGMENT_RECHECKS_SCHEDULED = Gauge(
    "cdp_segment_rechecks_scheduled",
    "Profiles of this worker's partitions with a time-based segment recheck to come.",
    registry=REGISTRY,
)
BACKFILL_PENDING = Gauge(
    "cdp_backfill_profiles_pending",
    "Profiles of this worker's partitions found stored under other segment definitions and"
    " not evaluated under the current ones yet (the background evaluation's work left).",
    registry=REGISTRY,
)
BACKFILL_EVALUATED = Counter(
    "cdp_backfill_profiles_evaluated_total",
    "Profiles evaluated under new segment definitions by the background evaluation.",
    registry=REGISTRY,
)
SEGMENT_RECHECK_PARTITIONS_UNREAD = Gauge(
    "cdp_segment_recheck_partitions_unread",
    "Held partitions whose profiles are still being read for their recheck times (a recheck"
    " of theirs may come late until then).",
    registry=REGISTRY,
)
SEGMENT_RECHECK_SCAN_SECONDS = Counter(
    "cdp_segment_recheck_scan_seconds_total",
    "Time spent reading assigned partitions' profiles for their recheck times.",
    registry=REGISTRY,
)
PRIVACY_REQUESTS = Counter(
    "cdp_privacy_requests_total",
    "Privacy requests by type (delete, suppress_with_delete, suppress, unsuppress) and status"
    " (received, completed).",
    ["type", "status"],
    registry=REGISTRY,
)
ERASURE_DURATION_SECONDS = Histogram(
    "cdp_erasure_duration_seconds",
    "From a privacy request's receipt (API or CLI) to its completion, by the worker that"
    " completed it; every type, erasures being the long ones.",
    ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SUPPRESSED_EVENTS = Counter(
    "cdp_suppressed_events_total",
    "Input events dropped because an identifier they were routed under is suppressed.",
    registry=REGISTRY,
)
ERASED_EVENTS_DROPPED = Counter(
    "cdp_erased_events_dropped_total",
    "Input events dropped because the identifier they were routed under was erased on request"
    " after they happened (read again after a crash, or late).",
    registry=REGISTRY,
)
PRIVACY_OLDEST_OPEN_REQUEST_AGE_SECONDS = Gauge(
    "cdp_privacy_oldest_open_request_age_seconds",
    "Age of the oldest privacy request this worker opened and has not seen completed (0: none).",
    registry=REGISTRY,
)
PRIVACY_OPEN_REQUEST_BOUND_SECONDS = Gauge(
    "cdp_privacy_open_request_bound_seconds",
    "How long a privacy request may stay open (CDP_PRIVACY_REQUEST_BOUND); the"
    " alert compares the oldest open request's age with it.",
    registry=REGISTRY,
)
JOURNEY_TRIGGERS = Counter(
    "cdp_journey_triggers_total",
    "Email-journey triggers emitted, by journey.",
    ["journey"],
    registry=REGISTRY,
)
JOURNEY_EVENTS = Counter(
    "cdp_journey_events_total",
    "Decisions of the flow engine (the journey-events topic), by journey, step, kind (entered,"
    " step_sent, waiting, exited, suppressed) and reason.",
    ["journey", "step", "kind", "reason"],
    registry=REGISTRY,
)
JOURNEY_TIMERS_PENDING = Gauge(
    "cdp_journey_timers_pending",
    "Profiles of this worker's partitions with a journey step to come at a due time (a wait,"
    " a deferred send).",
    registry=REGISTRY,
)
TIMER_LATENESS_SECONDS = Histogram(
    "cdp_timer_lateness_seconds",
    "How long after its due time a profile's timer ran (due journey steps and segment"
    " rechecks): at most CDP_RECHECK_INTERVAL_SECONDS plus the time to run the due ones.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
EXPIRED_PROFILES = Counter(
    "cdp_expired_profiles_total",
    "Profiles erased because their retention ran out (CDP_ANONYMOUS_RETENTION,"
    " CDP_PROFILE_RETENTION), by kind (anonymous, known).",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("anonymous", "known"):
    EXPIRED_PROFILES.labels(_kind)
PROFILE_EXPIRIES_SCHEDULED = Gauge(
    "cdp_profile_expiries_scheduled",
    "Profiles of this worker's partitions whose retention will run out unless they are seen"
    " again.",
    registry=REGISTRY,
)
SEGMENT_EVALUATION_ERRORS = Counter(
    "cdp_segment_evaluation_errors_total",
    "Segment expressions that failed at runtime for a profile (counted as not a member).",
    ["segment"],
    registry=REGISTRY,
)
EVENT_TO_OUTPUT_SECONDS = Histogram(
    "cdp_event_to_output_seconds",
    "Time from an event's append to its input topic until its outputs were handed to the producer.",
    buckets=_EVENT_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INPUT_WAIT_SECONDS = Histogram(
    "cdp_input_wait_seconds",
    "Time from an event's append to its input topic until the worker started on it: the "
    "broker's delivery, the fetch and the events before it in its fetch. The rest of "
    "cdp_event_to_output_seconds is the worker's own work on the event.",
    buckets=_EVENT_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LOOKUP_SECONDS = Histogram(
    "cdp_lookup_seconds",
    "HTTP lookup and decision latency, by endpoint (probes and metric scrapes are not counted).",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENT_LOOP_LAG_SECONDS = Histogram(
    "cdp_event_loop_lag_seconds",
    "How late the worker's event loop woke a timer, sampled 20 times a second: about how long "
    "a lookup waits before the worker starts on it.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE_SECONDS = Histogram(
    "cdp_gc_pause_seconds",
    "How long each run of Python's cyclic garbage collector stopped the worker, by generation "
    "(2 is a full collection).",
    ["generation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GC_FROZEN_OBJECTS = Gauge(
    "cdp_gc_frozen_objects",
    "Objects made while the worker started that the garbage collector no longer walks.",
    registry=REGISTRY,
)
READY = Gauge(
    "cdp_ready",
    "1 when the worker has joined its group, recovered its tables and processes events.",
    registry=REGISTRY,
)
BROKER_REACHABLE = Gauge(
    "cdp_broker_reachable",
    "1 while the broker answers the worker's periodic metadata request.",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "cdp_consumer_lag_messages",
    "Messages of a partition this worker holds that it has not read yet: the partition's end"
    " offset on the broker minus the worker's read position, refreshed every few seconds.",
    ["topic", "partition"],
    registry=REGISTRY,
)
IDENTITY_LINKS = Counter(
    "cdp_identity_links_total",
    "Claims of an identifier by a profile, by outcome (linked, already_linked, merge, refused).",
    ["outcome"],
    registry=REGISTRY,
)
IDENTITY_LINKS_REFUSED = Counter(
    "cdp_identity_links_refused_total",
    "Identifiers kept from a profile, by reason (owned_by_other_profile, cap_exceeded).",
    ["reason"],
    registry=REGISTRY,
)
IDENTITY_MERGES = Counter(
    "cdp_identity_merges_total",
    "Profiles merged into another profile of the same person.",
    registry=REGISTRY,
)
PROFILE_FORWARDS = Counter(
    "cdp_profile_forwards_total",
    "Messages that reached a merged-away profile and were passed on to the one it was merged into.",
    registry=REGISTRY,
)
IDENTIFIERS_PER_PROFILE = Histogram(
    "cdp_identifiers_per_profile",
    "Identifiers a profile holds, observed whenever a profile gains identifiers.",
    buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
IDENTIFIERS_BLOCKED = Counter(
    "cdp_identifiers_blocked_total",
    "Identifiers dropped from events because their value is on the block list, by kind.",
    ["kind"],
    registry=REGISTRY,
)
REBALANCE_SKIPPED_MESSAGES = Counter(
    "cdp_rebalance_skipped_messages_total",
    "Messages a stream skipped during a consumer-group rebalance; they are read again after it.",
    registry=REGISTRY,
)
RESTORED_RECORDS = Counter(
    "cdp_changelog_restored_records_total",
    "Changelog records a worker wrote into its local tables in bulk, restoring partitions whose "
    "local state was missing or far behind.",
    registry=REGISTRY,
)
RESTORE_SECONDS = Counter(
    "cdp_changelog_restore_seconds_total",
    "Time spent restoring tables in bulk from their changelogs; with the records counted above, "
    "the restore speed.",
    registry=REGISTRY,
)
REREAD_PARTITIONS = Counter(
    "cdp_partitions_reread_total",
    "Times a partition was read again because a fetch overlapped a seek or jumped past an offset.",
    registry=REGISTRY,
)


def sample_total(exposition: str, sample: str, **labels: str) -> float:
    """The sum of ``sample`` in a worker's ``/metrics`` text over its label sets that have
    ``labels``."""
    return sum(
        found.value
        for family in text_string_to_metric_families(exposition)
        for found in family.samples
        if found.name == sample and labels.items() <= found.labels.items()
    )
