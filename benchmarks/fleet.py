"""Workers under measurement: start, stop, wait, and read what they report about themselves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.broker import free_port
from streams.observability import sample_total
from streams.process import local_http, spawn_worker, wait_ready
from streams.settings import Settings


def directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux), from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's observations: how many, their sum, how many within a bound."""

    count: float
    total_s: float
    within: float

    def since(self, before: Histogram) -> dict[str, float]:
        """Mean and share beyond the bound of what was observed after ``before``."""
        count = self.count - before.count
        if not count:
            return {"count": 0}
        return {
            "count": count,
            "mean_ms": (self.total_s - before.total_s) / count * 1000,
            "beyond_share": 1 - (self.within - before.within) / count,
        }


@dataclass
class Worker:
    """One ``cdp worker`` process with its own data directory and API port."""

    env: dict[str, str]
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start the worker; return the seconds until it answered ``/ready``."""
        env = {**self.env, "CDP_DATA_DIR": str(self.data_dir), "CDP_WEB_PORT": str(self.port)}
        started = time.monotonic()
        self.process = spawn_worker(env, self.data_dir.parent / f"worker-{self.port}.log")
        if not wait_ready(self.api, self.process, timeout):
            raise RuntimeError(f"worker on port {self.port} did not become ready")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def processed(self) -> float:
        """Input events this worker has finished with: applied, duplicate or dead-lettered."""
        return self.metric("cdp_events_total")

    def metric(self, sample: str) -> float:
        """``sample`` in the worker's ``/metrics``, summed over its label sets."""
        return sample_total(self.exposition(), sample)

    def histogram(self, name: str, within_s: float, **labels: str) -> Histogram:
        """What the worker's histogram ``name`` (of the label sets with ``labels``) holds."""
        text = self.exposition()
        return Histogram(
            sample_total(text, f"{name}_count", **labels),
            sample_total(text, f"{name}_sum", **labels),
            sample_total(text, f"{name}_bucket", le=str(within_s), **labels),
        )

    def exposition(self) -> str:
        return local_http().get(f"{self.api}/metrics").text

    def rss(self) -> int:
        assert self.process is not None
        return rss_bytes(self.process.pid)

    def state_bytes(self) -> int:
        return directory_bytes(self.data_dir)

    def discard_state(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Deployment:
    """A set of workers sharing one app id and topic prefix on the broker (one scenario)."""

    bootstrap: str
    root: Path
    partitions: int
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        prefix = f"b{uuid.uuid4().hex[:6]}."
        self.env = {
            **os.environ,
            "CDP_KAFKA_BOOTSTRAP": self.bootstrap,
            "CDP_TOPIC_PREFIX": prefix,
            "CDP_APP_ID": f"cdp-{prefix.rstrip('.')}",
            "CDP_PARTITIONS": str(self.partitions),
            "CDP_SESSION_TIMEOUT_SECONDS": "6",
            "CDP_LOG_LEVEL": "warning",
        }
        cdp = {key[4:].lower(): value for key, value in self.env.items() if key[:4] == "CDP_"}
        self.settings = Settings.model_validate(cdp)

    def add_worker(self) -> Worker:
        worker = Worker(self.env, self.root / f"w{len(self.workers)}" / "data")
        worker.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.workers.append(worker)
        return worker

    def start(self, count: int) -> None:
        for _ in range(count):
            self.add_worker().start()
        # Every worker ready means every partition is assigned after the last join.
        for worker in self.workers:
            if worker.process is None or not wait_ready(worker.api, worker.process, 120):
                raise RuntimeError("a worker did not become ready after the last join")

    def processed(self) -> float:
        return sum(worker.processed() for worker in self.workers if worker.process is not None)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
