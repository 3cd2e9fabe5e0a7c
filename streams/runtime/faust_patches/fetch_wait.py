"""Cap how long a fetch may wait for data (replaces
``AIOKafkaConsumerThread._create_worker_consumer``; faust-streaming 0.15)."""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


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
