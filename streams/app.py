"""The faust.App, built from settings, with every domain's agents, tables and views installed.

Domains are installed explicitly (``install(runtime)``) instead of through Faust's
import-time autodiscovery, so an app can be built for any settings without module globals.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from confluent_kafka.admin import AdminClient

from streams import faust_fixes, fetches
from streams.codec import Codec
from streams.core import Rules
from streams.identity.messages import INTERNAL, OUTPUT_RECORDS, Out, Send, encode
from streams.runtime.kafka_clients import client_config, faust_credentials
from streams.sender import RecordSender
from streams.settings import Settings
from streams.state import StateSizing, store_url, table_options

log = logging.getLogger(__name__)

IDENTITIES_TABLE = "identities"
PROFILES_TABLE = "profiles"


@dataclass
class Runtime:
    """What the Faust shell of every domain works with."""

    settings: Settings
    bootstrap: str
    app: faust.App
    codec: Codec
    rules: Rules
    identity_topic: Any
    profile_topic: Any
    identities: Any
    profiles: Any
    sender: RecordSender

    def encode_output(self, record_name: str, record: dict[str, Any]) -> bytes:
        return self.codec.encode_record(record_name, record, self.settings.output_format)

    def internal_topic(self, out: Out) -> str:
        """The name of the internal topic ``out`` (one of ``INTERNAL``)."""
        topic = self.identity_topic if out is Out.IDENTITY else self.profile_topic
        name: str = topic.get_topic_name()
        return name

    def queue(self, send: Send, headers: dict[str, bytes] | None = None) -> None:
        """Queue what a step asked to send; ``headers`` travel along on the internal topics.

        Delivered by the end of the batch (:mod:`streams.stages`)."""
        settings = self.settings
        if send.topic in INTERNAL:
            value, own_headers = encode(send.message)
            self.sender.queue(
                self.internal_topic(send.topic),
                send.key.encode(),
                value,
                {**(headers or {}), **own_headers},
            )
            return
        topic_name = {
            Out.SEGMENT_CHANGES: settings.segment_changes_topic,
            Out.JOURNEYS: settings.journeys_topic,
            Out.IDENTITY_MERGES: settings.identity_merges_topic,
        }[send.topic]
        value = self.encode_output(OUTPUT_RECORDS[send.topic], send.message.to_record())
        self.sender.queue(topic_name, send.key.encode(), value)


def build_faust_app(settings: Settings, bootstrap: str) -> faust.App:
    faust_fixes.apply(settings.fetch_max_wait_ms)
    fetches.deliver_fetches_to_stages()
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
        table_standby_replicas=settings.standby_replicas,
        web_enabled=True,
        autodiscover=False,
    )


def raw_topic(app: faust.App, *names: str, **options: Any) -> Any:
    """A topic of plain bytes: the codec, not Faust, (de)serializes every message."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


def raw_table(app: faust.App, name: str, settings: Settings) -> Any:
    """A table of plain bytes in RocksDB, opened as :mod:`streams.state` sizes it."""
    sizing = StateSizing(settings.state_block_cache_bytes, settings.state_write_buffer_bytes)
    return app.Table(
        name,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        store=store_url(name),
        options=table_options(sizing),
    )


def create_runtime(settings: Settings, bootstrap: str) -> Runtime:
    from streams import collector, pipeline
    from streams.api import views

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
        ),
        identity_topic=raw_topic(
            app, settings.topic("internal.identity"), partitions=partitions, internal=True
        ),
        profile_topic=raw_topic(
            app, settings.topic("internal.profile"), partitions=partitions, internal=True
        ),
        identities=raw_table(app, IDENTITIES_TABLE, settings),
        profiles=raw_table(app, PROFILES_TABLE, settings),
        sender=RecordSender(bootstrap, linger_ms=settings.produce_linger_ms),
    )
    pipeline.install(runtime)
    views.install(runtime)
    collector.install(runtime)
    return runtime


def changelog_topics(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{name}-changelog" for name in (IDENTITIES_TABLE, PROFILES_TABLE)]


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
    if not all(name in topics for name in changelog_topics(runtime.settings)):
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
