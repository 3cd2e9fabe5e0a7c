"""Fixtures for the real thing: a broker and ``cdp worker`` processes.

``CDP_TEST_BROKER`` chooses the broker of every integration and fault test: ``embedded`` (the
default, Tansu, no Java needed) or ``apache-kafka`` (KRaft from the jars of ``make kafka``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.codec import Codec
from streams.runtime.broker import EmbeddedBroker, free_port, start_broker
from streams.runtime.kafka_broker import ApacheKafkaBroker, start_apache_kafka
from streams.runtime.processes import local_http, spawn_worker, wait_ready
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

WORKER_READY_TIMEOUT_S = 60.0


RunningBroker = EmbeddedBroker | ApacheKafkaBroker
BROKER_KINDS = ("embedded", "apache-kafka")


def chosen_broker_kind() -> str:
    kind = os.environ.get("CDP_TEST_BROKER", "embedded")
    if kind not in BROKER_KINDS:
        raise pytest.UsageError(f"CDP_TEST_BROKER must be one of {BROKER_KINDS}, not {kind!r}")
    return kind


# Kafka transactions: Apache Kafka has them, the embedded broker not (a worker refuses
# exactly_once there, see test_cli_mistakes).
needs_transactions = pytest.mark.skipif(
    chosen_broker_kind() != "apache-kafka",
    reason="exactly_once needs Kafka transactions, which the embedded broker lacks: "
    "run with CDP_TEST_BROKER=apache-kafka",
)
# CDP_PROCESSING_GUARANTEE values, for tests that must hold under both.
GUARANTEES = ["at_least_once", pytest.param("exactly_once", marks=needs_transactions)]


def start_test_broker(log_file: Path) -> RunningBroker:
    """A new broker of the kind ``CDP_TEST_BROKER`` names, on a free port."""
    if chosen_broker_kind() == "apache-kafka":
        return start_apache_kafka(free_port(), log_file=log_file, heap="512m")
    return start_broker(free_port(), log_file=log_file)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    log_file = tmp_path_factory.mktemp("broker") / "broker.log"
    running = start_test_broker(log_file)
    yield running
    running.stop()


@dataclass
class Worker:
    """A ``cdp worker`` process with its own settings, topics and API port."""

    settings: Settings
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return self.settings.api_url

    def start(self) -> None:
        self.spawn()
        assert self.process is not None
        ready = wait_ready(self.api, self.process, WORKER_READY_TIMEOUT_S)
        assert ready, f"worker not ready (exit code {self.process.poll()}):\n{self.log_tail()}"

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.process = spawn_worker(self.env, self.log_file)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, **params: str) -> httpx.Response:
        """A GET with the worker's API token, if it has one."""
        token = self.env.get("CDP_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return local_http().get(f"{self.api}{path}", params=params, headers=headers)


# Of every topic and table of the test workers (profile ids depend on it).
PARTITIONS = 8
# The one-step journeys, whose sends go at once at any time of day (the shipped flows wait,
# and hold mail in quiet hours): what workers run unless a test names its own file.
ONE_STEP_JOURNEYS = Path(__file__).parents[1] / "unit" / "one_step_journeys.yaml"


def worker_env(broker: RunningBroker, tmp_path: Path, **overrides: str) -> dict[str, str]:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    env = {
        **os.environ,
        "CDP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "CDP_TOPIC_PREFIX": prefix,
        "CDP_APP_ID": f"cdp-{prefix.rstrip('.')}",
        "CDP_DATA_DIR": str(tmp_path / "data"),
        "CDP_WEB_PORT": str(free_port()),
        # `cdp demo` starts a collector and serves a shop: never on a port another test holds.
        "CDP_COLLECTOR_PORT": str(free_port()),
        "CDP_DEMO_SHOP_PORT": str(free_port()),
        "CDP_PARTITIONS": str(PARTITIONS),
        "CDP_SESSION_TIMEOUT_SECONDS": "6",
        "CDP_LOG_LEVEL": "info",
        "CDP_JOURNEYS_FILE": str(ONE_STEP_JOURNEYS),
        # Sample events carry fixed dates (README's among them): once those are older than
        # the default 90 days, their anonymous profiles would expire while a test reads them.
        "CDP_ANONYMOUS_RETENTION": "3650d",
    }
    env.update(overrides)
    return env


def settings_from(env: dict[str, str]) -> Settings:
    cdp = {key[4:].lower(): value for key, value in env.items() if key.startswith("CDP_")}
    return Settings.model_validate(cdp)


@pytest.fixture
def make_worker(broker: RunningBroker, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def make(env: dict[str, str] | None = None, *, start: bool = True) -> Worker:
        env = env or worker_env(broker, tmp_path)
        settings = settings_from(env)
        ensure_topics(settings.kafka_bootstrap or broker.bootstrap, settings)
        worker = Worker(settings, env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        if start:
            worker.start()
        return worker

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture
def two_workers(
    broker: RunningBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> tuple[Worker, Worker]:
    """Two workers in one group, each with its own state and API, both ready."""
    # With an API token, so lookups routed between the workers must carry it.
    first_env = worker_env(broker, tmp_path / "one", CDP_API_TOKEN=uuid.uuid4().hex)
    second_env = {
        **first_env,
        "CDP_DATA_DIR": str(tmp_path / "two" / "data"),
        "CDP_WEB_PORT": str(free_port()),
    }
    first, second = make_worker(first_env), make_worker(second_env)
    # The first worker gives up half its partitions; wait until both own some.
    wait_until(lambda: first.get("/ready").status_code == 200, timeout=30)
    wait_until(lambda: second.get("/ready").status_code == 200, timeout=30)
    return first, second


@pytest.fixture
def worker(make_worker: Callable[..., Worker]) -> Worker:
    made: Worker = make_worker()
    return made


@dataclass
class Topics:
    """Produce raw bytes and read output records of one worker's topics."""

    bootstrap: str
    settings: Settings
    codec: Codec
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 2})
        # Assigned partitions, not a consumer group: reading starts at once, no join wait.
        # read_committed: a worker's exactly-once outputs count once they are committed.
        self.consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "tests",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.consumer.assign(
            [
                TopicPartition(topic, partition, 0)
                for topic in self.settings.output_topics
                for partition in range(self.settings.partitions)
            ]
        )
        self.names = self.settings.output_records

    def produce(self, topic: str, value: bytes | dict[str, Any], key: bytes | None = None) -> None:
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        self.producer.produce(topic, key=key, value=raw)

    def flush(self) -> None:
        assert self.producer.flush(10) == 0

    def poll(self) -> None:
        for message in self.consumer.consume(1000, timeout=0.2):
            if message.error() is None:
                record = self.codec.decode_record(
                    self.names[str(message.topic())], message.value() or b""
                )
                self.seen.setdefault(str(message.topic()), []).append(record)

    def wait_for(
        self, topic: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 45
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self.seen.get(topic, [])):
                return self.seen.get(topic, [])
        raise AssertionError(f"timed out waiting on {topic}; saw {self.seen.get(topic, [])}")

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topics(broker: RunningBroker, worker: Worker) -> Iterator[Topics]:
    made = Topics(broker.bootstrap, worker.settings, Codec(worker.settings.schemas_dir))
    yield made
    made.close()


def run_cdp(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``cdp`` command as a subprocess, with its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        input=stdin.decode() if stdin is not None else None,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_until(
    check: Callable[[], bool],
    timeout: float = 30,
    interval: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> None:
    """Wait for ``check``; on time-out fail with what ``explain`` says of the state then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time" + (f"\n{explain()}" if explain else ""))
