"""Apache Kafka (KRaft, one node as broker and controller) from the jars ``make kafka`` fetched.

Used by ``cdp broker --apache-kafka``, by the integration tests with
``CDP_TEST_BROKER=apache-kafka`` and by ``make bench BROKER=apache-kafka``. The jars come from
Maven Central through ``deploy/kafka/pom.xml`` (one pinned version, the one docker-compose.yml
runs too) into ``.kafka/libs``; nothing is downloaded here.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.runtime.broker import LOOPBACK, BrokerError, free_port, is_listening
from streams.settings import PROJECT_ROOT

DEFAULT_LIBS_DIR = PROJECT_ROOT / ".kafka" / "libs"
DEFAULT_HEAP = "512m"
BROKER_MAIN = "kafka.Kafka"
# Scala's StorageTool is the one kafka-storage.sh runs in Kafka 4.x.
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1

# A single node: every internal topic has one replica, and a group starts as soon as its first
# member joins instead of waiting for more (the default delay of 3 s slows every test join).
SINGLE_NODE_PROPERTIES: dict[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "8",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # Few threads: the broker shares two cores with the workers it serves.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
}


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, as ``kafka-storage random-uuid``.

    Like Kafka's ``Uuid.randomUuid``, it never starts with ``-``: the storage tool would read
    such an id as an option (1 start in 64 did, and formatting failed).
    """
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not made.startswith("-"):
            return made


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "Java not found (JAVA_HOME or java on the PATH): Apache Kafka needs Java 17 or later "
            "(e.g. apt-get install openjdk-17-jre-headless)"
        )
    return found


def kafka_classpath(libs_dir: Path) -> str:
    if not any(libs_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"Apache Kafka jars not found in {libs_dir}: run `make kafka`")
    return str(libs_dir / "*")


@dataclass
class ApacheKafkaBroker:
    """A ``kafka.Kafka`` JVM on loopback; a temporary log dir is removed on stop."""

    port: int
    controller_port: int
    process: subprocess.Popen[bytes]
    log_dir: Path
    temporary: bool
    listeners: dict[str, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            # SIGTERM is a controlled shutdown; a broker that hangs in it is killed.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.temporary:
            shutil.rmtree(self.log_dir.parent, ignore_errors=True)

    def wait(self) -> int:
        return self.process.wait()


def server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    extra_listeners: Mapping[str, tuple[int, str]] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The broker's configuration: PLAINTEXT on ``port``, the controller on ``controller_port``.

    ``extra_listeners`` maps a listener name to its port and security protocol.
    """
    listeners = {"PLAINTEXT": (port, "PLAINTEXT"), **(extra_listeners or {})}
    protocols = [f"{name}:{protocol}" for name, (_, protocol) in listeners.items()]
    endpoints = [f"{name}://{LOOPBACK}:{p}" for name, (p, _) in listeners.items()]
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join([*endpoints, f"CONTROLLER://{LOOPBACK}:{controller_port}"]),
        "advertised.listeners": ",".join(endpoints),
        "listener.security.protocol.map": ",".join([*protocols, "CONTROLLER:PLAINTEXT"]),
        "log.dirs": str(log_dir),
        **SINGLE_NODE_PROPERTIES,
        **(extra or {}),
    }


LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


def write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def start_apache_kafka(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    libs_dir: Path = DEFAULT_LIBS_DIR,
    heap: str = DEFAULT_HEAP,
    log_file: Path | None = None,
    extra_listeners: Mapping[str, tuple[int, str]] | None = None,
    extra_properties: Mapping[str, str] | None = None,
    jvm_options: tuple[str, ...] = (),
    scram_users: Mapping[str, str] | None = None,
    startup_timeout: float = 90.0,
) -> ApacheKafkaBroker:
    """Format (once) and start a single-node KRaft broker; return once it answers metadata.

    ``data_dir`` keeps the topics across restarts; without it they live in a temporary
    directory removed on stop. ``scram_users`` (name -> password) get SCRAM-SHA-512
    credentials when the log dir is formatted, for a SASL listener among ``extra_listeners``.
    Raises :class:`BrokerError` with one line saying what is
    missing (Java, the jars) or what went wrong.
    """
    java = java_binary()
    classpath = kafka_classpath(libs_dir)
    port = port or free_port()
    if is_listening(LOOPBACK, port):
        raise BrokerError(f"port {port} is already in use on {LOOPBACK}")
    controller_port = free_port()
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="cdp-kafka-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    log_dir = root / "log"
    config = root / "server.properties"
    write_properties(
        config,
        server_properties(port, controller_port, log_dir, extra_listeners, extra_properties),
    )
    log4j = root / "log4j2.properties"
    log4j.write_text(LOG4J2)
    jvm = [
        java,
        f"-Xmx{heap}",
        f"-Xms{min_heap(heap)}",
        # One GC thread and no concurrent marking: the machine's cores belong to the workers.
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        *jvm_options,
        "-cp",
        classpath,
    ]
    output = open(log_file, "ab") if log_file else None  # noqa: SIM115
    try:
        if not (log_dir / "meta.properties").exists():
            formatted = subprocess.run(
                [
                    *jvm,
                    STORAGE_TOOL,
                    "format",
                    "--config",
                    str(config),
                    "--cluster-id",
                    cluster_id(),
                    "--ignore-formatted",
                    *(
                        argument
                        for name, password in (scram_users or {}).items()
                        for argument in (
                            "--add-scram",
                            f"SCRAM-SHA-512=[name={name},password={password}]",
                        )
                    ),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if formatted.returncode != 0:
                last = (formatted.stderr or formatted.stdout).strip().splitlines()[-1:]
                raise BrokerError(f"formatting the Kafka log dir {log_dir} failed: {''.join(last)}")
        # A new session: Ctrl-C in a terminal reaches the owner, which stops the broker itself.
        process = subprocess.Popen(
            [*jvm, BROKER_MAIN, str(config)],
            stdout=output or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if output is not None:
            output.close()
    broker = ApacheKafkaBroker(
        port=port,
        controller_port=controller_port,
        process=process,
        log_dir=log_dir,
        temporary=temporary,
        listeners={name: p for name, (p, _) in (extra_listeners or {}).items()},
    )
    try:
        wait_until_serving(broker, startup_timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def min_heap(heap: str) -> str:
    """A start heap a quarter of the cap (at least 64m), so a small broker stays small."""
    megabytes = int(heap[:-1]) * {"k": 1 / 1024, "m": 1, "g": 1024}[heap[-1].lower()]
    return f"{max(64, int(megabytes / 4))}m"


def wait_until_serving(broker: ApacheKafkaBroker, timeout: float) -> None:
    """Until the broker lists itself in metadata: listening alone precedes its registration."""
    deadline = time.monotonic() + timeout
    while not is_listening(LOOPBACK, broker.port):
        if broker.process.poll() is not None:
            raise BrokerError(
                f"Apache Kafka exited with code {broker.process.returncode} before listening "
                f"on port {broker.port}"
            )
        if time.monotonic() > deadline:
            raise BrokerError(f"Apache Kafka did not listen on port {broker.port} in time")
        time.sleep(0.1)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    while True:
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except KafkaException:
            pass
        if broker.process.poll() is not None:
            raise BrokerError(f"Apache Kafka exited with code {broker.process.returncode}")
        if time.monotonic() > deadline:
            raise BrokerError(f"Apache Kafka on port {broker.port} did not serve metadata in time")
        time.sleep(0.2)


def sasl_ssl_properties(listener: str, keystore_pem: Path) -> dict[str, str]:
    """Broker properties for a SASL_SSL listener with SCRAM-SHA-512 and a PEM keystore (the
    private key, PKCS#8 unencrypted, followed by the certificate chain)."""
    prefix = f"listener.name.{listener.lower()}"
    return {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        f"{prefix}.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        f"{prefix}.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.location": str(keystore_pem),
    }
