"""What only a real Kafka can show: changelog topic configs, and the worker knowing its broker.

The config tests need Apache Kafka (the embedded broker keeps no topic configs and compacts
nothing); they run in ``make test-kafka`` (``CDP_TEST_BROKER=apache-kafka``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from streams.runtime.broker_kind import is_embedded_broker
from streams.runtime.worker_topics import TABLES, changelog_topic

from .conftest import RunningBroker, Worker, chosen_broker_kind, worker_env

on_apache_kafka = pytest.mark.skipif(
    chosen_broker_kind() != "apache-kafka",
    reason="topic configs need Apache Kafka: run with CDP_TEST_BROKER=apache-kafka",
)

COMPACTION = (
    "cleanup.policy",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "segment.ms",
)


def described(bootstrap: str, topic: str, names: tuple[str, ...] = COMPACTION) -> dict[str, str]:
    """The topic's configs ``names`` (default: compaction) as the broker reports them
    (DescribeConfigs)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    return {name: configs[name].value for name in names}


@on_apache_kafka
def test_changelogs_are_compacted_with_the_configured_bounds_and_follow_a_change(
    broker: RunningBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = worker_env(
        broker,
        tmp_path,
        CDP_CHANGELOG_MIN_COMPACTION_LAG="1m",
        CDP_CHANGELOG_MAX_COMPACTION_LAG="2d",
        CDP_CHANGELOG_DELETE_RETENTION="6h",
        CDP_CHANGELOG_SEGMENT="12h",
    )
    first = make_worker(env)
    changelogs = [changelog_topic(first.settings, table) for table in TABLES]
    for topic in changelogs:
        assert described(broker.bootstrap, topic) == {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": str(60_000),
            "max.compaction.lag.ms": str(2 * 86_400_000),
            "delete.retention.ms": str(6 * 3_600_000),
            "segment.ms": str(12 * 3_600_000),
        }
    first.stop()

    # The same worker restarted with a tighter erasure bound: the existing topics follow.
    second = make_worker({**env, "CDP_CHANGELOG_MAX_COMPACTION_LAG": "1d"})
    for topic in changelogs:
        assert described(broker.bootstrap, topic)["max.compaction.lag.ms"] == str(86_400_000)
    assert "discarding local state" not in second.log_file.read_text()


@on_apache_kafka
def test_the_default_changelog_configs_are_the_documented_ones(
    broker: RunningBroker, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker()
    topic = changelog_topic(worker.settings, "profiles")
    assert described(broker.bootstrap, topic) == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "max.compaction.lag.ms": str(7 * 86_400_000),
        "delete.retention.ms": str(86_400_000),
        "segment.ms": str(86_400_000),
    }


@on_apache_kafka
def test_dead_letters_are_kept_for_the_configured_retention(
    broker: RunningBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(worker_env(broker, tmp_path, CDP_DEAD_LETTER_RETENTION="3d"))
    topic = worker.settings.dead_letter_topic
    assert described(broker.bootstrap, topic, ("retention.ms",)) == {
        "retention.ms": str(3 * 86_400_000)
    }


def test_the_worker_knows_its_broker_and_uses_the_workarounds_only_on_the_embedded_one(
    broker: RunningBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    embedded = chosen_broker_kind() == "embedded"
    assert is_embedded_broker(broker.bootstrap) is embedded
    log = make_worker(worker_env(broker, tmp_path)).log_file.read_text()
    if embedded:
        assert "embedded broker at" in log
        assert "workarounds off" not in log
    else:
        assert "embedded-broker workarounds off" in log
        assert "end-offset workaround is on" not in log
