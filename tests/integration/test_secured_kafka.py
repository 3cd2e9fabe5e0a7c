"""A secured cluster: SASL_SSL with SCRAM-SHA-512 and a certificate made here.

Needs Apache Kafka (``CDP_TEST_BROKER=apache-kafka``, ``make test-kafka``): the embedded
broker has neither TLS nor SASL. The module starts its own broker with a SASL_SSL listener
beside the PLAINTEXT one the broker itself uses.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.events import Event, EventKind, Identity
from streams.producer import EventProducer
from streams.runtime.broker import free_port
from streams.runtime.kafka_broker import ApacheKafkaBroker, sasl_ssl_properties, start_apache_kafka

from .conftest import Worker, chosen_broker_kind, settings_from, wait_until, worker_env

pytestmark = pytest.mark.skipif(
    chosen_broker_kind() != "apache-kafka",
    reason="TLS and SASL need Apache Kafka: run with CDP_TEST_BROKER=apache-kafka",
)

USER = "cdp-worker"
PASSWORD = f"pw-{uuid.uuid4().hex}"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}"),
        cwd=directory,
    )


@dataclass
class Secured:
    broker: ApacheKafkaBroker
    port: int
    ca: Path
    other_ca: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A broker whose SASL_SSL listener presents a certificate signed by a CA made here."""
    directory = tmp_path_factory.mktemp("tls")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key"),
        *("-out", "server.csr", "-subj", "/CN=127.0.0.1"),
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext"),
        cwd=directory,
    )
    keystore = directory / "keystore.pem"
    keystore.write_text(
        (directory / "server.key").read_text() + (directory / "server.pem").read_text()
    )
    port = free_port()
    broker = start_apache_kafka(
        free_port(),
        log_file=directory / "broker.log",
        extra_listeners={"SASL_SSL": (port, "SASL_SSL")},
        extra_properties=sasl_ssl_properties("SASL_SSL", keystore),
        scram_users={USER: PASSWORD},
    )
    yield Secured(broker, port, directory / "ca.pem", directory / "other-ca.pem")
    broker.stop()


def secured_env(secured: Secured, tmp_path: Path, **overrides: str) -> dict[str, str]:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    env = worker_env(secured.broker, tmp_path)
    env.update(
        {
            "CDP_KAFKA_BOOTSTRAP": secured.bootstrap,
            "CDP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CDP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CDP_KAFKA_SASL_USERNAME": USER,
            "CDP_KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "CDP_KAFKA_SSL_CA_FILE": str(secured.ca),
        }
    )
    env.update(overrides)
    return env


def test_the_pipeline_runs_through_sasl_ssl_with_scram_and_never_logs_the_password(
    secured: Secured, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = secured_env(secured, tmp_path)
    worker = make_worker(env)
    settings = settings_from(env)
    visitor = f"a-{uuid.uuid4().hex[:8]}"
    with EventProducer(secured.bootstrap, settings=settings) as producer:
        producer.send(
            Event(
                kind=EventKind.IDENTIFY,
                event_id=uuid.uuid4().hex,
                occurred_at=1795430000000,
                identity=Identity(anonymous_id=visitor, email=f"{visitor}@example.com"),
                body={"traits": {"first_name": "Ann"}, "newsletter": "subscribed"},
            )
        )
    wait_until(lambda: worker.get("/profiles", anonymous_id=visitor).status_code == 200, 30)
    assert PASSWORD not in worker.log_file.read_text()


def cdp_worker_fails(env: dict[str, str]) -> str:
    """Start ``cdp worker``; it must exit with code 2 at once. Returns its stderr."""
    run = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert PASSWORD not in run.stdout + run.stderr
    return run.stderr


def test_a_wrong_password_fails_at_start_naming_the_setting(
    secured: Secured, tmp_path: Path
) -> None:
    env = secured_env(secured, tmp_path)
    env.pop("CDP_KAFKA_SASL_PASSWORD_FILE")
    env["CDP_KAFKA_SASL_PASSWORD"] = "not-the-password"
    lines = cdp_worker_fails(env).strip().splitlines()
    assert len(lines) == 1, lines
    assert "CDP_KAFKA_SASL_PASSWORD" in lines[0]


def test_an_untrusted_certificate_fails_at_start_naming_the_setting(
    secured: Secured, tmp_path: Path
) -> None:
    env = secured_env(secured, tmp_path, CDP_KAFKA_SSL_CA_FILE=str(secured.other_ca))
    lines = cdp_worker_fails(env).strip().splitlines()
    assert len(lines) == 1, lines
    assert "CDP_KAFKA_SSL_CA_FILE" in lines[0]
