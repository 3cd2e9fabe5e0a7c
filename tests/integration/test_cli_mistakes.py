"""The first hour's mistakes, typed into a real ``cdp`` process: each fails at once with one
line naming the variable or option to fix, and the exit status says which kind of mistake."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.broker import free_port

from .conftest import run_cdp

# (environment, arguments, exit status, what the message must name)
MISTAKES: list[tuple[dict[str, str], list[str], int, str]] = [
    ({"CDP_PARTITIONS": "abc"}, ["worker"], 2, "CDP_PARTITIONS=abc: must be a whole number"),
    ({"CDP_PARTITIONS": "0"}, ["worker"], 2, "CDP_PARTITIONS=0: must be at least 1"),
    ({"CDP_WEB_PORT": "-1"}, ["worker"], 2, "CDP_WEB_PORT=-1: must be a port number 1-65535"),
    ({"CDP_WEB_PORT": "http"}, ["worker"], 2, "CDP_WEB_PORT=http: must be a whole number"),
    ({"CDP_EMBEDDED_BROKER_PORT": "0"}, ["worker"], 2, "EMBEDDED_BROKER_PORT=0: must be a port"),
    ({"CDP_OUTPUT_FORMAT": "xml"}, ["worker"], 2, "OUTPUT_FORMAT=xml: must be one of json"),
    ({"CDP_LOG_LEVEL": "loud"}, ["worker"], 2, "CDP_LOG_LEVEL=loud: must be one of"),
    ({"CDP_KAFKA_BOOTSTRAP": "kafka"}, ["worker"], 2, "KAFKA_BOOTSTRAP=kafka: must be host:port"),
    ({"CDP_TOPIC_PREFIX": "my topics"}, ["worker"], 2, "CDP_TOPIC_PREFIX=my topics: may hold only"),
    ({"CDP_APP_ID": "a/b"}, ["worker"], 2, "CDP_APP_ID=a/b: may hold only"),
    ({"CDP_SCHEMAS_DIR": "/nowhere"}, ["worker"], 2, "SCHEMAS_DIR=/nowhere: must be a directory"),
    ({"CDP_SEGMENTS_FILE": "/no.yaml"}, ["worker"], 2, "CDP_SEGMENTS_FILE=/no.yaml: must be an"),
    ({"CDP_JOURNEYS_FILE": "/no.yaml"}, ["worker"], 2, "CDP_JOURNEYS_FILE=/no.yaml: must be an"),
    ({"CDP_ADVERTISED_URL": "pod-0:6066"}, ["worker"], 2, "CDP_ADVERTISED_URL=pod-0:6066: must be"),
    ({"CDP_SCHEMA_REGISTRY_URL": "reg:8081"}, ["worker"], 2, "CDP_SCHEMA_REGISTRY_URL=reg:8081"),
    ({"CDP_API_TOKEN": " "}, ["worker"], 2, "CDP_API_TOKEN=<hidden>: must not be empty"),
    ({"CDP_BLOCKED_IDENTIFIERS": "null,test"}, ["worker"], 2, "CDP_BLOCKED_IDENTIFIERS=null,test"),
    ({"CDP_MAX_EMAILS": "0"}, ["worker"], 2, "CDP_MAX_EMAILS=0: must be at least 1"),
    ({"CDP_MAX_USER_IDS": "many"}, ["worker"], 2, "CDP_MAX_USER_IDS=many: must be a whole number"),
    ({"CDP_RECENT_EVENT_IDS": "4"}, ["worker"], 2, "CDP_RECENT_EVENT_IDS=4: must be at least 16"),
    ({"CDP_SESSION_TIMEOUT_SECONDS": "0"}, ["worker"], 2, "CDP_SESSION_TIMEOUT_SECONDS=0: must be"),
    (
        {"CDP_HEARTBEAT_INTERVAL_SECONDS": "30"},
        ["worker"],
        2,
        "CDP_HEARTBEAT_INTERVAL_SECONDS must be less than CDP_SESSION_TIMEOUT_SECONDS",
    ),
    ({"CDP_RECHECK_INTERVAL_SECONDS": "-1"}, ["worker"], 2, "CDP_RECHECK_INTERVAL_SECONDS=-1"),
    ({"CDP_BATCH_MAX_MESSAGES": "0"}, ["worker"], 2, "CDP_BATCH_MAX_MESSAGES=0: must be at least"),
    ({"CDP_PROCESSING_GUARANTEE": "twice"}, ["worker"], 2, "CDP_PROCESSING_GUARANTEE=twice: must"),
    ({"CDP_POPUP_COOLDOWN_DAYS": "-2"}, ["worker"], 2, "CDP_POPUP_COOLDOWN_DAYS=-2: must be at"),
    ({"CDP_PARTITIONS": "x"}, ["produce", "order"], 2, "CDP_PARTITIONS=x"),
    ({"CDP_OUTPUT_FORMAT": "csv"}, ["demo", "--duration", "5"], 2, "CDP_OUTPUT_FORMAT=csv"),
    ({}, ["demo", "--duration", "-5"], 2, "--duration"),
    ({}, ["demo", "--rate", "0"], 2, "--rate"),
    ({}, ["demo", "--shoppers", "0"], 2, "--shoppers"),
    ({}, ["demo", "--mix", "page-view=abc"], 2, "mix"),
    ({}, ["produce", "purchase"], 2, "'purchase' is not one of"),
    ({}, ["profile", "foo"], 2, "cannot tell what 'foo' is: give kind:value"),
    ({}, ["broker", "--port", "70000"], 2, "--port"),
    ({}, ["dead-letters", "replay"], 2, "choose letters with --reason, --topic or --at"),
]


def clean_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CDP_")}
    # Never the developer's embedded broker on 9092, and never a wait for one.
    env.update(
        CDP_EMBEDDED_BROKER_PORT=str(free_port()),
        CDP_KAFKA_BOOTSTRAP="127.0.0.1:1",
        CDP_KAFKA_CONNECT_TIMEOUT_SECONDS="2",
        COLUMNS="200",
    )
    env.update(overrides)
    return env


@pytest.mark.parametrize(("overrides", "args", "status", "named"), MISTAKES)
def test_a_mistake_is_one_line_naming_what_to_fix(
    overrides: dict[str, str], args: list[str], status: int, named: str
) -> None:
    result = run_cdp(clean_env(**overrides), *args)
    assert result.returncode == status, result.stderr
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(MISTAKES) >= 30


def test_an_unreachable_broker_is_named_within_the_timeout() -> None:
    event = '{"event_id":"e","occurred_at":1,"identity":{"anonymous_id":"a"},"url":"u"}\n'
    result = run_cdp(clean_env(), "produce", "page-view", stdin=event.encode())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "cannot reach Kafka at 127.0.0.1:1 (CDP_KAFKA_BOOTSTRAP) after 2 s"
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_names_the_port_and_the_variable(taken_port: int) -> None:
    result = run_cdp(clean_env(CDP_WEB_PORT=str(taken_port)), "worker")
    assert result.returncode == 2
    assert f"port {taken_port} on 127.0.0.1 (CDP_WEB_PORT) is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_exactly_once_is_refused_on_the_embedded_broker_in_one_line(tmp_path: Path) -> None:
    env = clean_env(CDP_PROCESSING_GUARANTEE="exactly_once", CDP_DATA_DIR=str(tmp_path))
    del env["CDP_KAFKA_BOOTSTRAP"]  # the worker starts the embedded broker
    result = run_cdp(env, "worker")
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "CDP_PROCESSING_GUARANTEE" in line]
    assert "exactly_once needs Kafka transactions" in line
    assert "use at_least_once" in line
    assert "Traceback" not in result.stderr


def test_verbose_keeps_the_traceback() -> None:
    result = run_cdp(clean_env(CDP_PARTITIONS="abc"), "--verbose", "worker")
    assert result.returncode != 0
    assert "Traceback" in result.stderr or "SettingsError" in result.stderr
