"""Cap how long a fetch may wait for data, and read only committed records when asked
(replaces ``AIOKafkaConsumerThread._create_worker_consumer``; faust-streaming 0.15)."""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


def cap_fetch_wait(max_wait_ms: int, read_committed: bool = False) -> None:
    """Cap how long a fetch may wait for data; Faust hard-codes 1,500 ms.

    Brokers that hold a fetch for its whole max wait instead of answering when data arrives
    (the embedded broker does) would otherwise add up to 1.5 s per pipeline stage.

    ``read_committed``: the worker's outputs are transactional (exactly once), and so are the
    records on its internal topics and changelogs: its consumer, which reads those topics and
    restores the tables, must skip what an aborted transaction left. Faust reads committed
    records only with its own exactly-once guarantee, which would start a transactional
    producer per partition beside the worker's sender; here only the isolation level is set.
    """
    create = AIOKafkaConsumerThread._create_worker_consumer
    wanted = (max_wait_ms, read_committed)
    if getattr(create, "consumer_options", None) == wanted:
        return
    original = getattr(create, "original", create)

    def create_capped(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        if read_committed:
            # Read when the consumer starts (its fetcher is made then), and by the offset
            # lookups: a partition's end is then its last stable offset.
            consumer._isolation_level = "read_committed"
        return consumer

    create_capped.original = original  # type: ignore[attr-defined]
    create_capped.consumer_options = wanted  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_capped  # type: ignore[method-assign]
