"""The sender against the embedded broker: delivery reports reach the batches waiting on them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.runtime import sender
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.sender import Deliveries, RecordSender


def test_records_queued_while_the_poller_idles_are_reported_at_once(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With nothing under way the poller waits; were it to sleep its idle interval out, the
    # batch below would wait that long for its report (every batch's changelog did, at
    # low load, 20 ms each).
    monkeypatch.setattr(sender, "IDLE_POLL_INTERVAL_S", 30.0)
    topic = f"sender-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        created.result(10)

    async def deliver_one(records: RecordSender) -> None:
        deliveries = Deliveries()
        records.queue(topic, b"key", b"value", deliveries=deliveries)
        deliveries.seal()
        await asyncio.wait_for(deliveries.done.wait(), 5.0)

    async def scenario() -> None:
        records = RecordSender(broker.bootstrap)
        records.start_polling()
        try:
            await deliver_one(records)
            # The poller has seen nothing under way since, and idles.
            await asyncio.sleep(0.2)
            await deliver_one(records)
        finally:
            assert records.close() == 0

    asyncio.run(scenario())
