"""The worker's own topics, created before Faust starts: internal hops and table changelogs.

Faust would create them itself, but two things go wrong when it does:
- on Apache Kafka a topic is in the broker's metadata a moment after CreateTopics answers;
  Faust subscribes right after creating, its group leader finds the topic missing, assigns
  none of its partitions ("Ignoring missing topic") and the worker never reads it until the
  next rebalance. Here every topic is waited for until the metadata lists all its partitions.
- the changelogs need explicit compaction settings (``CDP_CHANGELOG_*``), and an existing
  changelog must get them too when they change; Faust only sets configs on topics it creates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streams.durations import milliseconds
from streams.runtime.kafka_clients import client_config
from streams.runtime.topics import create_topics
from streams.settings import Settings

log = logging.getLogger(__name__)

IDENTITIES_TABLE = "identities"
PROFILES_TABLE = "profiles"
PRIVACY_TABLE = "privacy"
TABLES = (IDENTITIES_TABLE, PROFILES_TABLE, PRIVACY_TABLE)
"""The worker's tables, each with a changelog topic (:func:`changelog_topic`)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def changelog_config(settings: Settings) -> dict[str, str]:
    """Topic configs of every table changelog, from the ``CDP_CHANGELOG_*`` settings."""
    return {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(milliseconds(settings.changelog_min_compaction_lag)),
        "max.compaction.lag.ms": str(milliseconds(settings.changelog_max_compaction_lag)),
        "delete.retention.ms": str(milliseconds(settings.changelog_delete_retention)),
        "segment.ms": str(milliseconds(settings.changelog_segment)),
    }


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog (``<app id>-<table>-changelog``)."""
    return f"{settings.app_id}-{table}-changelog"


def worker_topics(settings: Settings) -> list[TopicSpec]:
    partitions = settings.partitions
    return [
        TopicSpec(settings.topic("internal.identity"), partitions),
        TopicSpec(settings.topic("internal.profile"), partitions),
        # Faust's leader election among the workers: one partition, read by one worker.
        TopicSpec(f"{settings.app_id}-__assignor-__leader", 1),
        *(
            TopicSpec(changelog_topic(settings, table), partitions, changelog_config(settings))
            for table in TABLES
        ),
    ]


def ensure_worker_topics(bootstrap: str, settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create what is missing, align the changelogs' configs, and wait until all are served.

    Returns the names created.
    """
    admin = AdminClient(client_config(bootstrap, settings))
    specs = worker_topics(settings)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        create_topics(
            admin,
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=settings.replication_factor,
                    config=spec.config,
                )
                for spec in missing
            ],
            timeout,
        )
    align_configs(admin, [spec for spec in specs if spec.config and spec.name in existing])
    wait_until_served(admin, specs, timeout)
    return [spec.name for spec in missing]


def align_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float = 10.0) -> None:
    """Set the configs of existing topics that differ from their spec."""
    for spec in specs:
        resource = ConfigResource(ResourceType.TOPIC, spec.name)
        try:
            described = admin.describe_configs([resource])[resource].result(timeout=timeout)
        except KafkaException as exc:
            log.warning("cannot read the configs of %s to check them: %s", spec.name, exc)
            continue
        differing = {
            name: value
            for name, value in spec.config.items()
            if name not in described or described[name].value != value
        }
        if not differing:
            continue
        log.info("setting %s on %s", differing, spec.name)
        change = ConfigResource(
            ResourceType.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in differing.items()
            ],
        )
        try:
            admin.incremental_alter_configs([change])[change].result(timeout=timeout)
        except KafkaException as exc:
            log.warning("cannot set %s on %s: %s", differing, spec.name, exc)


def wait_until_served(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """Until the metadata lists every partition of every topic with a leader."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=5).topics
        waiting = [
            spec.name
            for spec in specs
            if spec.name not in topics
            or topics[spec.name].error is not None
            or len(topics[spec.name].partitions) < spec.partitions
            or any(p.leader < 0 for p in topics[spec.name].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not in the broker's metadata in time: {waiting}")
        time.sleep(0.1)
