"""The faust.App, built from settings, with every domain's agents, tables and views installed.

Domains are installed explicitly (``install(runtime)``) instead of through Faust's
import-time autodiscovery, so an app can be built for any settings without module globals.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

from streams.codec import Codec
from streams.core import Rules
from streams.identity.messages import Out, Send, encode
from streams.settings import Settings

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
    segment_changes_topic: Any
    journeys_topic: Any
    dead_letter_topic: Any
    identity_merges_topic: Any
    identities: Any
    profiles: Any

    def encode_output(self, record_name: str, record: dict[str, Any]) -> bytes:
        return self.codec.encode_record(record_name, record, self.settings.output_format)

    async def send(self, send: Send, headers: dict[str, bytes] | None = None) -> None:
        """Send what a step asked for; ``headers`` travel along on the internal topics."""
        if send.topic in (Out.IDENTITY, Out.PROFILE):
            value, own_headers = encode(send.message)
            topic = self.identity_topic if send.topic is Out.IDENTITY else self.profile_topic
            await topic.send(
                key=send.key.encode(), value=value, headers={**(headers or {}), **own_headers}
            )
            return
        topic, record_name = {
            Out.SEGMENT_CHANGES: (self.segment_changes_topic, "SegmentChange"),
            Out.JOURNEYS: (self.journeys_topic, "JourneyTrigger"),
            Out.IDENTITY_MERGES: (self.identity_merges_topic, "IdentityMerge"),
        }[send.topic]
        value = self.encode_output(record_name, send.message.to_record())
        await topic.send(key=send.key.encode(), value=value)


def cap_fetch_wait(max_wait_ms: int) -> None:
    """Cap how long a fetch may wait for data; Faust hard-codes 1,500 ms.

    Brokers that hold a fetch for its whole max wait instead of answering when data arrives
    (the embedded broker does) would otherwise add up to 1.5 s per pipeline stage.
    """
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "capped_fetch_wait", None) == max_wait_ms:
        return
    original = getattr(create, "original", create)

    def create_capped(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    create_capped.original = original  # type: ignore[attr-defined]
    create_capped.capped_fetch_wait = max_wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_capped  # type: ignore[method-assign]


def trust_persisted_changelog_offsets() -> None:
    """Never take a changelog's end for lower than what this worker saw the broker accept.

    The embedded broker (Tansu 0.6.0) answers ListOffsets with the base offset of the last
    record batch plus one, not the offset after its last record, so after a batch of
    several changelog records the reported end lies below offsets the broker acknowledged.
    Faust would then refuse to recover ("persisted offset is higher than the highwater")
    whenever a worker takes back a partition it wrote. On Kafka the reported end is never
    lower, so this changes nothing there.
    """
    build = Recovery._build_highwaters
    if getattr(build, "trusts_persisted_offsets", False):
        return

    async def build_highwaters(
        self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await build(self, consumer, tps, destination, title)
        for tp in tps:
            persisted = self.tp_to_table[tp].persisted_offset(tp)
            if persisted is not None and persisted > destination[tp]:
                destination[tp] = persisted

    build_highwaters.trusts_persisted_offsets = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]


def deliver_table_writes_before_commit(timeout_s: float = 60.0) -> None:
    """Make Faust's pre-commit flush wait until every buffered table write is delivered.

    Table writes go to the changelog through Faust's producer buffer, and Faust flushes the
    producer before it commits input offsets. But the buffer's ``flush`` gives up after
    0.1 s without a send, so offsets could be committed while changelog writes were still
    buffered; a worker killed then lost those updates for good (found by the SIGKILL test).
    Here ``flush`` waits for the delivery of every write buffered so far.
    """
    if getattr(ProducerBuffer.flush, "waits_for_delivery", False):
        return
    put = ProducerBuffer.put

    def put_tracked(self: ProducerBuffer, fut: Any) -> None:
        undelivered: set[Any] = self.__dict__.setdefault("undelivered", set())
        undelivered.add(fut)
        fut.add_done_callback(undelivered.discard)
        put(self, fut)

    async def flush_delivered(self: ProducerBuffer) -> None:
        undelivered = list(self.__dict__.get("undelivered", ()))
        if not undelivered:
            return
        _, late = await asyncio.wait(undelivered, timeout=timeout_s)
        if late:
            log.error("%d table writes not delivered after %.0f s", len(late), timeout_s)

    flush_delivered.waits_for_delivery = True  # type: ignore[attr-defined]
    ProducerBuffer.put = put_tracked  # type: ignore[method-assign]
    ProducerBuffer.flush = flush_delivered  # type: ignore[method-assign]


def build_faust_app(settings: Settings, bootstrap: str) -> faust.App:
    cap_fetch_wait(settings.fetch_max_wait_ms)
    trust_persisted_changelog_offsets()
    deliver_table_writes_before_commit()
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


def raw_table(app: faust.App, name: str, partitions: int) -> Any:
    return app.Table(name, partitions=partitions, key_type=bytes, value_type=bytes)


def create_runtime(settings: Settings, bootstrap: str) -> Runtime:
    from streams.api import views
    from streams.identity import agents as identity_agents
    from streams.ingest import agents as ingest_agents
    from streams.profiles import agents as profile_agents

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
        segment_changes_topic=raw_topic(app, settings.segment_changes_topic),
        journeys_topic=raw_topic(app, settings.journeys_topic),
        dead_letter_topic=raw_topic(app, settings.dead_letter_topic),
        identity_merges_topic=raw_topic(app, settings.identity_merges_topic),
        identities=raw_table(app, IDENTITIES_TABLE, partitions),
        profiles=raw_table(app, PROFILES_TABLE, partitions),
    )
    ingest_agents.install(runtime)
    identity_agents.install(runtime)
    profile_agents.install(runtime)
    views.install(runtime)
    return runtime


def changelog_topics(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{name}-changelog" for name in (IDENTITIES_TABLE, PROFILES_TABLE)]


def discard_orphaned_state(runtime: Runtime, bootstrap: str) -> bool:
    """Delete local table state when the broker no longer has the changelogs it came from.

    That happens whenever a memory-only embedded broker restarts: the RocksDB files then
    describe offsets that no longer exist, and Faust would refuse to start. The changelog is
    the source of truth, so local state without it is only a cache of something gone.
    Call it before the worker starts (the tables open their files on start).
    """
    state_dir = Path(runtime.app.conf.tabledir)
    if not state_dir.exists():
        return False
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    if all(name in topics for name in changelog_topics(runtime.settings)):
        return False
    log.warning(
        "changelog topics are missing on %s; discarding local state in %s", bootstrap, state_dir
    )
    shutil.rmtree(state_dir)
    return True
