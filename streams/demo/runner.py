"""``cdp demo``: a worker process, simulated shoppers producing, and the outputs read back live."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from rich.console import Console
from rich.live import Live

from streams.codec import Codec
from streams.demo.dashboard import DemoStats, progress_line, render, summary
from streams.demo.shop import ShopConfig, ShopServer
from streams.demo.traffic import ShopperSimulation
from streams.producer import EventProducer
from streams.runtime.broker import LOOPBACK
from streams.runtime.kafka_clients import client_config
from streams.runtime.processes import spawn_collector, spawn_worker, wait_ready
from streams.settings import OutputFormat, Settings

WORKER_START_TIMEOUT_S = 90.0
# The shop's write key when CDP_COLLECTOR_WRITE_KEYS is unset (the demo is local only).
DEMO_WRITE_KEY = "demo-shop-key"
REFRESH_S = 0.25
PROGRESS_LINE_S = 5.0


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None
    """Seconds to run; None runs until Ctrl-C."""
    rate: float
    """Shopper actions per second."""
    shoppers: int
    mix: dict[str, float] | None = None
    """Event mix (see :func:`streams.demo.traffic.parse_mix`); None: the simulation's default."""


class LiveView:
    """The dashboard, redrawn in place on a terminal."""

    refresh_s = REFRESH_S

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, refresh_per_second=4)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(
        self, stats: DemoStats, urls: list[str], elapsed_s: float, duration_s: float | None
    ) -> None:
        self._live.update(render(stats, api_urls=urls, elapsed_s=elapsed_s, duration_s=duration_s))


class ProgressLines:
    """A plain line every few seconds where a redrawn view would print nothing until the end."""

    refresh_s = PROGRESS_LINE_S

    def __init__(self, console: Console) -> None:
        self._console = console

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(
        self, stats: DemoStats, urls: list[str], elapsed_s: float, duration_s: float | None
    ) -> None:
        line = progress_line(stats, elapsed_s, duration_s)
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._console.file.flush()


def demo_env(settings: Settings, bootstrap: str) -> tuple[dict[str, str], ShopConfig]:
    """The worker's and collector's environment, and the shop's view of them: the shop's
    origin is allowed (CORS), and a demo write key is used unless keys are configured."""
    env = {**os.environ, "CDP_KAFKA_BOOTSTRAP": bootstrap}
    shop_origin = f"http://{LOOPBACK}:{settings.demo_shop_port}"
    env["CDP_CORS_ORIGINS"] = json.dumps(sorted({*settings.cors_origins, shop_origin}))
    keys = settings.write_keys
    if not keys:
        env["CDP_COLLECTOR_WRITE_KEYS"] = f"{DEMO_WRITE_KEY}:demo-shop"
    write_key = next(iter(keys), DEMO_WRITE_KEY)
    collector = f"http://{LOOPBACK}:{settings.collector_port}"
    return env, ShopConfig(write_key, collector, settings.api_url)


def run_demo(settings: Settings, bootstrap: str, options: DemoOptions, console: Console) -> int:
    """Run until the duration elapses (or Ctrl-C); return the process exit code."""
    log_file = settings.data_dir / "worker.log"
    env, shop_config = demo_env(settings, bootstrap)
    worker = spawn_worker(env, log_file)
    collector = spawn_collector(env, settings.data_dir / "collector.log")
    shop = ShopServer(LOOPBACK, settings.demo_shop_port, shop_config).start()
    try:
        with console.status("starting the worker (joining the consumer group)…"):
            if not wait_ready(settings.api_url, worker, WORKER_START_TIMEOUT_S):
                console.print(f"[red]the worker did not become ready; see {log_file}[/]")
                return 1
        console.print(
            f"demo shop: {shop.url} (tracks into the collector on {shop_config.collector_url})"
        )
        return _run(settings, bootstrap, options, console, worker, shop.url)
    finally:
        shop.stop()
        for process in (collector, worker):
            process.terminate()
            try:
                process.wait(20)
            except Exception:
                process.kill()


def _run(
    settings: Settings,
    bootstrap: str,
    options: DemoOptions,
    console: Console,
    worker: subprocess.Popen[bytes],
    shop_url: str,
) -> int:
    duration, rate = options.duration, options.rate
    codec = Codec(settings.schemas_dir, max_event_bytes=settings.max_event_bytes)
    # A new seed every run: the same seed would replay the same event ids, which the
    # worker rightly ignores as duplicates.
    simulation = ShopperSimulation(
        seed=time.time_ns() % 2**31, shoppers=options.shoppers, mix=options.mix
    )
    producer = EventProducer(bootstrap, settings=settings, codec=codec, fmt=OutputFormat.AVRO)
    consumer = Consumer(
        {
            **client_config(bootstrap, settings),
            "group.id": f"cdp-demo-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    # Assigned partitions read from now on at once; a consumer group would first wait to join.
    consumer.assign(
        [
            TopicPartition(topic, partition, OFFSET_END)
            for topic in settings.output_topics
            for partition in range(settings.partitions)
        ]
    )
    record_names = settings.output_records
    stats = DemoStats()
    handlers = {
        "SegmentChange": stats.record_segment_change,
        "JourneyTrigger": stats.record_trigger,
        "IdentityMerge": stats.record_merge,
        "DeadLetter": stats.record_dead_letter,
        # Of the journey decisions the demo shows the deferred sends beside the sends.
        "JourneyEvent": stats.record_journey_event,
    }
    emails = simulation.subscriber_emails
    started = time.monotonic()
    produced = 0
    visitor = "unknown-visitor"
    code = 0

    def urls() -> list[str]:
        base = settings.api_url
        found = emails(1)
        who = found[0] if found else "someone@example.com"
        return [
            f"{base}/profiles?email={who}",
            f"{base}/decisions/newsletter-popup?anonymous_id={visitor}",
            f"{base}/metrics",
            shop_url,
        ]

    view = LiveView(console) if console.is_terminal else ProgressLines(console)
    try:
        with view:
            last_refresh = 0.0
            while duration is None or time.monotonic() - started < duration:
                elapsed = time.monotonic() - started
                due = int(elapsed * rate) - produced
                for _ in range(max(0, due)):
                    for event in simulation.next_events(int(time.time() * 1000)):
                        visitor = event.identity.anonymous_id or visitor
                        producer.send(event)
                        stats.record_produced(event.kind.value)
                    produced += 1
                for message in consumer.consume(500, timeout=0.05):
                    if message.error() or message.value() is None:
                        continue
                    name = record_names[str(message.topic())]
                    handler = handlers.get(name)
                    # Outputs the live view does not show (journey events) are not read.
                    if handler is not None:
                        handler(codec.decode_record(name, message.value() or b""))
                if time.monotonic() - last_refresh > view.refresh_s:
                    view.update(stats, urls(), elapsed, duration)
                    last_refresh = time.monotonic()
                if worker.poll() is not None:
                    console.print("[red]the worker exited; see its log[/]")
                    code = 1
                    break
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        consumer.close()
    console.print(summary(stats, elapsed_s=time.monotonic() - started))
    return code
