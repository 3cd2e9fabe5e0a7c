"""The producer API for engineering teams: typed events in, keyed Avro (or JSON) on the topics.

    from streams.producer import EventProducer
    with EventProducer("kafka:9092") as producer:
        producer.send(event)

Each event goes to its kind's topic, keyed by its strongest identifier as the worker keys
identifiers (``email:ann@x.io``), as Avro single-object encoding (or JSON). That key puts the
event in the partition of its identifier, where the worker resolves it without a hop over
the internal identity topic. Delivery is at-least-once; the worker drops replays by
``event_id``.
"""

from __future__ import annotations

from types import TracebackType

from confluent_kafka import KafkaError, Message, Producer

from streams.codec import Codec
from streams.events import Event
from streams.identity.resolver import routing_key
from streams.partitioning import LIBRDKAFKA_PARTITIONER
from streams.runtime.kafka_clients import client_config
from streams.settings import OutputFormat, Settings, get_settings


class DeliveryError(RuntimeError):
    pass


class EventProducer:
    def __init__(
        self,
        bootstrap: str,
        *,
        settings: Settings | None = None,
        codec: Codec | None = None,
        fmt: OutputFormat = OutputFormat.AVRO,
        linger_ms: int = 5,
    ) -> None:
        self.settings = settings or get_settings()
        self.codec = codec or Codec(
            self.settings.schemas_dir, max_event_bytes=self.settings.max_event_bytes
        )
        self.fmt = fmt
        self.errors: list[str] = []
        self._producer = Producer(
            {
                **client_config(bootstrap, self.settings),
                # Kafka's default partitioner, as Java clients and the worker partition keys.
                "partitioner": LIBRDKAFKA_PARTITIONER,
                "linger.ms": linger_ms,
                "enable.idempotence": False,
                "acks": "all",
            }
        )

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.errors.append(str(error))

    def send(self, event: Event) -> None:
        """Queue one event; call :meth:`flush` (or leave the ``with`` block) to wait for it."""
        self.send_raw(
            self.settings.input_topic(event.kind),
            routing_key(event).encode(),
            self.codec.encode_event(event, self.fmt),
        )

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                # The local queue is full: let the client deliver, then try again.
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining or self.errors:
            raise DeliveryError(
                f"{remaining} events undelivered after {timeout}s; errors: {self.errors[:3]}"
            )

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
