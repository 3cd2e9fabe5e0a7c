"""The worker's runtime, built from settings: the faust.App, its topics and tables, and the
pipeline installed on it.

Everything is installed explicitly instead of through Faust's import-time autodiscovery,
so a runtime can be built for any settings without module globals. The HTTP API is
installed on top of it by the command that runs the worker (:mod:`streams.cli`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import faust
from confluent_kafka.admin import AdminClient

from streams.codec import Codec
from streams.durations import milliseconds
from streams.profiles.retention import Retention
from streams.runtime import faust_patches, gc_tuning, pipeline
from streams.runtime.context import Runtime, raw_table, raw_topic
from streams.runtime.kafka_clients import client_config, faust_credentials
from streams.runtime.sender import RecordSender, Transactional
from streams.runtime.worker_topics import (
    IDENTITIES_TABLE,
    PRIVACY_TABLE,
    PROFILES_TABLE,
    TABLES,
    changelog_topic,
)
from streams.settings import ProcessingGuarantee, Settings
from streams.steps.process import Rules

log = logging.getLogger(__name__)


def build_faust_app(settings: Settings, bootstrap: str) -> faust.App:
    faust_patches.apply(
        settings.fetch_max_wait_ms,
        exactly_once=settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE,
    )
    timeout = settings.session_timeout_seconds
    return faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=settings.api_url,
        broker_session_timeout=timeout,
        broker_rebalance_timeout=timeout,
        broker_credentials=faust_credentials(settings),
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        consumer_auto_offset_reset="earliest",
        # A fetch is at most a batch: the topics read first wait at most that long.
        broker_max_poll_records=settings.batch_max_messages,
        table_standby_replicas=settings.standby_replicas,
        web_enabled=True,
        autodiscover=False,
    )


def retention(settings: Settings) -> Retention:
    """How long profiles are kept, from CDP_ANONYMOUS_RETENTION, CDP_PROFILE_RETENTION and
    CDP_ERASED_MARK_RETENTION."""
    known = settings.profile_retention
    return Retention(
        milliseconds(settings.anonymous_retention),
        None if known is None else milliseconds(known),
        milliseconds(settings.erased_mark_retention),
    )


def create_runtime(settings: Settings, bootstrap: str) -> Runtime:
    app = build_faust_app(settings, bootstrap)
    partitions = settings.partitions
    runtime = Runtime(
        settings=settings,
        bootstrap=bootstrap,
        app=app,
        codec=Codec(
            settings.schemas_dir,
            max_event_bytes=settings.max_event_bytes,
            schema_registry_url=settings.schema_registry_url,
        ),
        rules=Rules.load(
            settings.segments_file,
            settings.journeys_file,
            settings.recent_event_ids,
            settings.identifier_caps,
            retention(settings),
        ),
        identity_topic=raw_topic(
            app, settings.topic("internal.identity"), partitions=partitions, internal=True
        ),
        profile_topic=raw_topic(
            app, settings.topic("internal.profile"), partitions=partitions, internal=True
        ),
        identities=raw_table(app, IDENTITIES_TABLE, settings),
        profiles=raw_table(app, PROFILES_TABLE, settings),
        privacy=raw_table(app, PRIVACY_TABLE, settings),
        sender=RecordSender(
            bootstrap,
            linger_ms=settings.produce_linger_ms,
            transactional=transactional(settings),
        ),
    )
    pipeline.install(runtime)
    gc_tuning.install(runtime)
    return runtime


def transactional(settings: Settings) -> Transactional | None:
    """Exactly once: the worker's transactions, named after the address it answers lookups
    on, which its replacement takes over (a StatefulSet pod's name, a test worker's port)."""
    if settings.processing_guarantee is not ProcessingGuarantee.EXACTLY_ONCE:
        return None
    return Transactional(f"{settings.app_id}:{settings.api_url}", settings.app_id)


def changelog_topics(settings: Settings) -> list[str]:
    return [changelog_topic(settings, name) for name in TABLES]


STOPPED_CLEANLY_MARKER = ".stopped-cleanly"


def discard_untrusted_state(runtime: Runtime, bootstrap: str) -> str | None:
    """Delete local table state that may disagree with the changelogs; return why, or None.

    Local state is only a cache of the changelogs, and it can be wrong in two ways:
    - the broker no longer has the changelogs it came from (any restart of a memory-only
      embedded broker), and Faust would refuse to start on offsets that no longer exist;
    - the last run did not stop cleanly (SIGKILL, OOM, a crash). Faust writes a table value
      to RocksDB at once and its changelog record later, so a killed worker can leave local
      values the changelog never got. The events behind them are read again, recognised as
      applied, and change nothing, so the changelog (and every worker restoring from it)
      would miss them for good. Restoring from the changelog replays them properly.
    Call it before the worker starts (the tables open their files on start).
    """
    state_dir = Path(runtime.app.conf.tabledir)
    if not state_dir.exists():
        return None
    marker = state_dir / STOPPED_CLEANLY_MARKER
    topics = AdminClient(client_config(bootstrap)).list_topics(timeout=10).topics
    reason = None
    # Only the changelogs of tables held here: a table added by an upgrade has neither yet.
    held = [
        changelog
        for table, changelog in zip(TABLES, changelog_topics(runtime.settings), strict=True)
        if any(state_dir.glob(f"{table}-*.db"))
    ]
    if not all(name in topics for name in held):
        reason = f"changelog topics are missing on {bootstrap}"
    elif not marker.exists():
        reason = "the last run did not stop cleanly"
    if reason is None:
        marker.unlink()  # so that a crash of this run is noticed at the next start
        return None
    log.warning("%s; discarding local state in %s", reason, state_dir)
    shutil.rmtree(state_dir)
    return reason


def mark_stopped_cleanly(runtime: Runtime) -> None:
    """Record that the worker stopped cleanly: every table write reached its changelog."""
    state_dir = Path(runtime.app.conf.tabledir)
    if state_dir.exists():
        (state_dir / STOPPED_CLEANLY_MARKER).touch()
