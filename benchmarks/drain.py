"""Backlog drain: produce N simulated shopper events, then time one worker processing them all.

    .venv/bin/python -m benchmarks.drain --events 20000

A first, coarse measurement of full-pipeline throughput (decode, identity, profile, segments,
journeys, outputs) on the embedded broker; the full benchmark suite builds on it.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time

import httpx

from streams.broker import free_port, start_broker
from streams.demo.traffic import ShopperSimulation
from streams.process import spawn_worker, wait_ready
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import ensure_topics

_EVENTS_TOTAL = re.compile(r"^cdp_events_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def processed(api: str) -> float:
    """Input events the worker has finished with: applied, duplicate or dead-lettered."""
    return sum(float(value) for value in _EVENTS_TOTAL.findall(httpx.get(f"{api}/metrics").text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--shoppers", type=int, default=20_000)
    args = parser.parse_args()

    broker = start_broker(free_port())
    port = free_port()
    settings = Settings(kafka_bootstrap=broker.bootstrap)
    ensure_topics(broker.bootstrap, settings)
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "CDP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CDP_DATA_DIR": data_dir,
            "CDP_WEB_PORT": str(port),
            "CDP_SESSION_TIMEOUT_SECONDS": "6",
            "CDP_LOG_LEVEL": "warning",
        }
        worker = spawn_worker(env, None)
        api = f"http://127.0.0.1:{port}"
        try:
            if not wait_ready(api, worker, timeout=60):
                raise SystemExit("the worker did not become ready")
            simulation = ShopperSimulation(seed=1, shoppers=args.shoppers)
            with EventProducer(broker.bootstrap, settings=settings) as producer:
                for event in simulation.stream(args.events):
                    producer.send(event)
            started = time.monotonic()
            while processed(api) < args.events:
                time.sleep(0.2)
            elapsed = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
            broker.stop()
    print(
        f"{args.events} events drained by one worker in {elapsed:.1f} s: "
        f"{args.events / elapsed:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
