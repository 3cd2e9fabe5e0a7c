"""The local Apache Kafka's setup: one pinned version, its config, durations in settings."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.durations import format_duration, parse_duration
from streams.runtime.kafka_broker import cluster_id, min_heap, server_properties
from streams.runtime.topics import public_topic_configs
from streams.runtime.worker_topics import changelog_config
from streams.settings import PROJECT_ROOT, Settings

POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
COMPOSE = PROJECT_ROOT / "docker-compose.yml"


def pinned_kafka_version() -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().find("m:properties/m:kafka.version", namespace)
    assert version is not None
    assert version.text
    return version.text


def test_docker_compose_runs_the_kafka_version_the_tests_run() -> None:
    images = re.findall(r"image:\s*apache/kafka:(\S+)", COMPOSE.read_text())
    assert images == [pinned_kafka_version()]
    assert pinned_kafka_version().startswith("4.")


def test_a_single_node_serves_its_internal_topics_with_one_replica_and_no_join_delay(
    tmp_path: Path,
) -> None:
    properties = server_properties(19092, 19093, tmp_path / "log")
    assert properties["process.roles"] == "broker,controller"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_ids_are_kraft_style_and_heaps_start_at_a_quarter() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id())
    assert cluster_id() != cluster_id()
    assert min_heap("512m") == "128m"
    assert min_heap("2g") == "512m"
    assert min_heap("128m") == "64m"


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool reads ``--cluster-id -x...`` as a missing value and refuses to format."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert cluster_id() == "AQAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta()),
        ("2w", timedelta(days=14)),
    ],
)
def test_durations_read_as_written(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["7", "7x", "d", "-1d", "1.5h", ""])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_changelog_configs_come_from_the_settings() -> None:
    settings = Settings.model_validate(
        {"changelog_max_compaction_lag": "3d", "changelog_segment": "6h"}
    )
    assert changelog_config(settings) == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "max.compaction.lag.ms": str(3 * 86_400_000),
        "delete.retention.ms": str(86_400_000),
        "segment.ms": str(6 * 3_600_000),
    }


def test_a_segment_longer_than_the_compaction_bound_is_refused_naming_both() -> None:
    with pytest.raises(ValidationError, match="CDP_CHANGELOG_SEGMENT must not exceed"):
        Settings.model_validate({"changelog_max_compaction_lag": "1d", "changelog_segment": "2d"})


def test_plaintext_adds_nothing_and_sasl_ssl_reaches_librdkafka_with_the_file_password(
    tmp_path: Path,
) -> None:
    from streams.runtime.kafka_clients import client_config

    assert client_config("k:9092", Settings()) == {"bootstrap.servers": "k:9092"}
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    settings = Settings.model_validate(
        {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": "cdp",
            "kafka_sasl_password_file": str(password_file),
            "kafka_ssl_ca_file": str(ca),
        }
    )
    assert client_config("k:9093", settings) == {
        "bootstrap.servers": "k:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "cdp",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "CDP_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "cdp"},
            "CDP_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_ssl_ca_file": "/nowhere/ca.pem"}, "CDP_KAFKA_SSL_CA_FILE"),
    ],
)
def test_incomplete_security_settings_are_refused_naming_the_variable(
    values: dict[str, str], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings.model_validate(values)


def test_dead_letters_are_created_with_their_retention_and_only_they() -> None:
    default = public_topic_configs(Settings())
    assert default == {"cdp.dead-letter": {"retention.ms": str(14 * 86_400_000)}}
    settings = Settings.model_validate({"dead_letter_retention": "36h"})
    assert public_topic_configs(settings)[settings.dead_letter_topic] == {
        "retention.ms": str(36 * 3_600_000)
    }


def test_retention_settings_are_durations_named_in_their_error() -> None:
    with pytest.raises(ValidationError, match="anonymous_retention"):
        Settings.model_validate({"anonymous_retention": "90 days"})
    assert Settings().profile_retention is None
    assert Settings.model_validate({"profile_retention": "2w"}).profile_retention == timedelta(
        days=14
    )
