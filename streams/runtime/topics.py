"""Creating the public topics on start, on the embedded broker and on real Kafka alike."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.durations import milliseconds
from streams.runtime.kafka_clients import client_config
from streams.settings import Settings


def public_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics, settings.privacy_requests_topic, *settings.output_topics]


def public_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic configs the public topics are created with, by name (the rest: the broker's).

    Dead letters hold events' raw bytes, personal data included, and Kafka cannot delete
    one record: their retention is the bound on how long a person's bytes stay there.
    """
    retention = milliseconds(settings.dead_letter_retention)
    return {settings.dead_letter_topic: {"retention.ms": str(retention)}}


class KafkaUnreachableError(RuntimeError):
    def __init__(self, bootstrap: str, seconds: float) -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap} (CDP_KAFKA_BOOTSTRAP) after {seconds:g} s"
        )


def ensure_topics(bootstrap: str, settings: Settings) -> list[str]:
    """Create missing input and output topics; return the names that were created.

    Faust creates its own internal and changelog topics; these are the ones producers and
    consumers outside the worker rely on, so they exist before the first worker joins.
    Raises :class:`KafkaUnreachableError` when the broker does not answer within
    ``CDP_KAFKA_CONNECT_TIMEOUT_SECONDS``.
    """
    timeout = settings.kafka_connect_timeout_seconds
    # Connection failures are reported once, as KafkaUnreachableError, not logged per retry.
    admin = AdminClient({**client_config(bootstrap, settings), "log_level": 2})
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(0.1, deadline - time.monotonic())
            existing = set(admin.list_topics(timeout=min(5.0, left)).topics)
            break
        except KafkaException:
            if time.monotonic() >= deadline:
                raise KafkaUnreachableError(bootstrap, timeout) from None
            time.sleep(0.5)
    missing = [name for name in public_topics(settings) if name not in existing]
    if not missing:
        return []
    configs = public_topic_configs(settings)
    create_topics(
        admin,
        [
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=configs.get(name, {}),
            )
            for name in missing
        ],
        timeout,
    )
    return missing


def create_topics(admin: AdminClient, topics: list[NewTopic], timeout: float) -> None:
    """Create ``topics``, waiting for each; one that exists already is no error."""
    futures = admin.create_topics(topics)
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            # Another worker starting at the same moment may have created it first.
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
