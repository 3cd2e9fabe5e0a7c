"""What the worker's shells work with: the Faust app, its topics and tables, the codec, the
rules and the sender, as one typed :class:`Runtime`; and the raw topics and tables they use.

Separate from :mod:`streams.runtime.app`, which assembles a runtime and installs the pipeline
on it, so the shells depend on this and nothing depends back on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT, TopicT

from streams.codec import Codec
from streams.runtime.sender import RecordSender
from streams.runtime.state import StateSizing, store_url, table_options
from streams.settings import Settings
from streams.steps.messages import INTERNAL, OUTPUT_RECORDS, Out, Send, encode
from streams.steps.process import Rules

RawTable = TableT[bytes, bytes]


@dataclass
class Runtime:
    """What the Faust shell of every domain works with."""

    settings: Settings
    bootstrap: str
    app: faust.App
    codec: Codec
    rules: Rules
    identity_topic: TopicT
    profile_topic: TopicT
    identities: RawTable
    profiles: RawTable
    privacy: RawTable
    """Privacy requests' status and the suppression list (:mod:`streams.steps.privacy`)."""
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

        Delivered by the end of the batch (:mod:`streams.runtime.stages`)."""
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
            Out.JOURNEY_EVENTS: settings.journey_events_topic,
            Out.IDENTITY_MERGES: settings.identity_merges_topic,
            Out.PRIVACY_EVENTS: settings.privacy_events_topic,
        }[send.topic]
        value = self.encode_output(OUTPUT_RECORDS[send.topic], send.message.to_record())
        self.sender.queue(topic_name, send.key.encode(), value)


def raw_topic(app: faust.App, *names: str, **options: Any) -> TopicT:
    """A topic of plain bytes: the codec, not Faust, (de)serializes every message."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


def raw_table(app: faust.App, name: str, settings: Settings) -> RawTable:
    """A table of plain bytes in RocksDB, opened as :mod:`streams.runtime.state` sizes it."""
    sizing = StateSizing(settings.state_block_cache_bytes, settings.state_write_buffer_bytes)
    table: RawTable = app.Table(
        name,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        store=store_url(name),
        options=table_options(sizing),
    )
    return table
