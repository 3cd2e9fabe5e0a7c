"""Workers under measurement: start, stop, wait, and read what they report about themselves."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.broker import free_port
from streams.runtime.metrics import sample_total
from streams.runtime.processes import local_http, spawn_worker, wait_ready
from streams.settings import Settings


def directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process (Linux), from ``/proc``; ``VmHWM``: its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's observations: how many, their sum, and the cumulative count
    at each bucket's upper bound, in the order of the bounds."""

    count: float
    total_s: float
    buckets: tuple[tuple[float, float], ...]

    def since(self, before: Histogram, bound_s: float) -> dict[str, float]:
        """What was observed after ``before``: the mean, the share beyond ``bound_s`` (one of
        the bucket bounds) and p50/p99 interpolated within their buckets, as Prometheus'
        ``histogram_quantile`` does."""
        count = self.count - before.count
        if not count:
            return {"count": 0}
        earlier = dict(before.buckets)
        cumulative = [(bound, seen - earlier.get(bound, 0.0)) for bound, seen in self.buckets]
        return {
            "count": count,
            "mean_ms": (self.total_s - before.total_s) / count * 1000,
            "beyond_share": 1 - dict(cumulative)[bound_s] / count,
            "p50_ms": bucket_quantile(cumulative, 0.5) * 1000,
            "p99_ms": bucket_quantile(cumulative, 0.99) * 1000,
        }


def bucket_quantile(cumulative: list[tuple[float, float]], fraction: float) -> float:
    """The ``fraction`` quantile of a histogram's cumulative bucket counts, linear within the
    bucket it falls in; in the last (unbounded) bucket, the highest finite bound."""
    rank = fraction * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, seen in cumulative:
        if seen >= rank:
            if bound == math.inf:
                return lower_bound
            share = (rank - lower_count) / (seen - lower_count) if seen > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, seen
    return lower_bound


def histogram_in(expositions: list[str], name: str, **labels: str) -> Histogram:
    """Histogram ``name`` in ``expositions`` (``/metrics`` texts), summed over them and over
    their label sets that have ``labels``."""
    totals: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for exposition in expositions:
        for family in text_string_to_metric_families(exposition):
            for found in family.samples:
                if not (found.name.startswith(name) and labels.items() <= found.labels.items()):
                    continue
                if found.name == f"{name}_bucket":
                    bound = float(found.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + found.value
                else:
                    totals[found.name] = totals.get(found.name, 0.0) + found.value
    return Histogram(
        totals.get(f"{name}_count", 0.0),
        totals.get(f"{name}_sum", 0.0),
        tuple(sorted(buckets.items())),
    )


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

    def histogram(self, name: str, **labels: str) -> Histogram:
        """What the worker's histogram ``name`` (summed over its label sets with ``labels``)
        holds."""
        return histogram_in([self.exposition()], name, **labels)

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
    guarantee: str = "at_least_once"
    """CDP_PROCESSING_GUARANTEE of its workers."""
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
            "CDP_PROCESSING_GUARANTEE": self.guarantee,
        }
        cdp = {key[4:].lower(): value for key, value in self.env.items() if key[:4] == "CDP_"}
        self.settings = Settings.model_validate(cdp)

    def add_worker(self) -> Worker:
        worker = Worker(self.env, self.root / f"w{len(self.workers)}" / "data")
        worker.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.workers.append(worker)
        return worker

    def start(self, count: int, timeout: float = 120.0) -> None:
        for _ in range(count):
            self.add_worker().start(timeout)
        # Every worker ready means every partition is assigned after the last join.
        for worker in self.workers:
            if worker.process is None or not wait_ready(worker.api, worker.process, timeout):
                raise RuntimeError("a worker did not become ready after the last join")

    def processed(self) -> float:
        return sum(worker.processed() for worker in self.running())

    def running(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.process is not None]

    def metric(self, sample: str, **labels: str) -> float:
        """``sample`` with ``labels`` summed over the running workers' ``/metrics``."""
        return sum(sample_total(worker.exposition(), sample, **labels) for worker in self.running())

    def histogram(self, name: str) -> Histogram:
        """The running workers' histograms ``name``, added up."""
        return histogram_in([worker.exposition() for worker in self.running()], name)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
