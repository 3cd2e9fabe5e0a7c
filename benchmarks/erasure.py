"""Erasure under load: how fast privacy requests complete while events flow, and what they cost.

    python -m benchmarks.erasure [--profiles 10000] [--rate 2000] [--seconds 50]

One worker on a broker this starts (8 partitions). First ``--profiles`` people are made, each
seen on a device and then signing up with an email address (two profiles merged into one,
a forward left). Then two phases of ``--seconds`` each with the demo's shopper load at
``--rate`` events/s: the load alone, then the load with an erasure (``delete``, by email) of
every person spread over the phase (by default 200 erasures/s: 10,000 while 100,000 events
flow; ``--seconds 10`` asks 1,000/s, more than one worker's capacity beside the load).
Reported: each erasure's completion time (its ``erasure_completed`` record's
``duration_ms``: request produced to request closed), the load's event-to-segment-change
latency in both phases and the worker's CPU seconds in both: the throughput cost.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.fleet import Deployment, Worker
from benchmarks.measure import (
    OutputTail,
    SegmentChangeClock,
    percentile,
    produce,
    shopper_events,
    summary_ms,
)
from streams.events import Event, EventKind, Identity, now_ms
from streams.privacy.requests import new_request
from streams.producer import EventProducer
from streams.runtime.broker import free_port, start_broker
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGET_P99_MS = 5_000


def cpu_seconds(worker: Worker) -> float:
    """User and system CPU time of the worker process so far (Linux, from ``/proc``)."""
    assert worker.process is not None
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def people(count: int, run: str) -> Iterator[Event]:
    """Each person's page view on a device, then the sign-up on it with an email address."""
    at = now_ms()
    for n in range(count):
        device, email = f"{run}-{n}-device", f"{run}-{n}@example.com"
        body = {"url": "https://shop.example/toys", "path": "/toys", "category": "toys"}
        yield Event(EventKind.PAGE_VIEW, f"{run}-v{n}", at, Identity(anonymous_id=device), body)
        signup = {"newsletter": "subscribed", "consent": {"email_marketing": True}}
        identity = Identity(anonymous_id=device, email=email)
        yield Event(EventKind.IDENTIFY, f"{run}-s{n}", at, identity, signup)


class Completions(OutputTail):
    """Each privacy request's ``duration_ms``, as its completion record says."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.durations_ms: dict[str, int] = {}
        super().__init__(bootstrap, settings, settings.privacy_events_topic)

    def take(self, record: dict[str, Any], stamp_s: float) -> None:
        self.durations_ms.setdefault(record["request_id"], record["duration_ms"])


def phase(
    bootstrap: str,
    deployment: Deployment,
    rate: float,
    seconds: float,
    seed: int,
    erase: list[str] | None = None,
) -> dict[str, Any]:
    """The shopper load for ``seconds``; erasures of ``erase`` (emails) spread over it."""
    settings = deployment.settings
    worker = deployment.workers[0]
    clock = SegmentChangeClock(bootstrap, settings)
    completions = Completions(bootstrap, settings)
    count = int(rate * seconds)
    events = list(shopper_events(count, 20_000, seed))
    before_processed, before_cpu = deployment.processed(), cpu_seconds(worker)
    sent: dict[str, float] = {}

    def load() -> None:
        sent.update(produce(bootstrap, settings, iter(events), rate))

    loader = threading.Thread(target=load)
    began = time.monotonic()
    loader.start()
    wanted: set[str] = set()
    if erase:
        with EventProducer(bootstrap, settings=settings, linger_ms=2) as producer:
            for n, email in enumerate(erase):
                delay = began + n * seconds / len(erase) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                request = new_request(
                    "delete", f"email:{email}", settings.partitions, uuid.uuid4().hex, now_ms()
                )
                wanted.add(request.request_id)
                producer.send_raw(
                    settings.privacy_requests_topic,
                    request.identifier.encode(),
                    request.to_bytes(),
                )
    loader.join()
    deadline = time.monotonic() + 300
    while (
        deployment.processed() - before_processed < count
        or not wanted <= completions.durations_ms.keys()
    ) and time.monotonic() < deadline:
        time.sleep(0.5)
    took = time.monotonic() - began
    cpu = cpu_seconds(worker) - before_cpu
    time.sleep(1.0)  # the last outputs reach the consumers
    clock.close()
    completions.close()
    result: dict[str, Any] = {
        "load_events": count,
        "seconds": took,
        "worker_cpu_s": cpu,
        "load_latency": summary_ms(clock.latencies(sent)),
    }
    if erase:
        done = [completions.durations_ms[r] / 1000 for r in wanted if r in completions.durations_ms]
        result["erasures"] = len(wanted)
        result["completed"] = len(done)
        result["completion"] = summary_ms(done)
        result["completion"]["max_ms"] = max(done, default=0.0) * 1000
        result["completion"]["p99_met"] = percentile(done, 0.99) * 1000 <= TARGET_P99_MS
    return result


def run(profiles: int, rate: float, seconds: float, root: Path) -> dict[str, Any]:
    broker = start_broker(free_port(), log_file=root / "broker.log")
    deployment = Deployment(broker.bootstrap, root / "d", 8)
    try:
        ensure_topics(broker.bootstrap, deployment.settings)
        deployment.start(1)
        run_tag = uuid.uuid4().hex[:6]
        made = list(people(profiles, run_tag))
        produce(broker.bootstrap, deployment.settings, iter(made))
        deadline = time.monotonic() + 600
        while deployment.processed() < len(made) and time.monotonic() < deadline:
            time.sleep(0.5)
        emails = [f"{run_tag}-{n}@example.com" for n in range(profiles)]
        alone = phase(broker.bootstrap, deployment, rate, seconds, seed=1)
        erasing = phase(broker.bootstrap, deployment, rate, seconds, seed=2, erase=emails)
    finally:
        deployment.stop()
        broker.stop()
    return {
        "profiles_erased": profiles,
        "load_rate": rate,
        "phase_seconds": seconds,
        "erasures_per_s": profiles / seconds,
        "load_alone": alone,
        "load_with_erasures": erasing,
        "cpu_ms_per_erasure": (erasing["worker_cpu_s"] - alone["worker_cpu_s"]) * 1000 / profiles,
        "target_p99_ms": TARGET_P99_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        results = run(args.profiles, args.rate, args.seconds, Path(root))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
