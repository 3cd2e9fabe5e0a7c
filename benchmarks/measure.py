"""The measurements: load at a rate, raw consume ceiling, event-to-segment latency, lookups,
and a synthetic profile changelog for restore and footprint."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from streams.codec import Codec
from streams.demo.traffic import ShopperSimulation
from streams.events import Event
from streams.partitioning import LIBRDKAFKA_PARTITIONER
from streams.producer import EventProducer
from streams.settings import Settings

Tick = Callable[[int], None]


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile; ``nan`` for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    return {
        "count": len(samples_s),
        "p50_ms": percentile(samples_s, 0.50) * 1000,
        "p99_ms": percentile(samples_s, 0.99) * 1000,
        "p999_ms": percentile(samples_s, 0.999) * 1000,
    }


def shopper_events(
    count: int, shoppers: int, seed: int, mix: Mapping[str, float] | None = None
) -> Iterator[Event]:
    """The demo's shopper model: anonymous sessions, sign-ups, logins, orders, email, in
    the proportions of ``mix`` (the demo's own by default)."""
    simulation = ShopperSimulation(seed=seed, shoppers=shoppers, mix=mix)
    return simulation.stream(count, now_ms=_wall_ms)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def produce(
    bootstrap: str,
    settings: Settings,
    events: Iterator[Event],
    rate: float | None = None,
    tick: Tick | None = None,
) -> dict[str, float]:
    """Produce ``events`` as fast as the broker takes them, or at ``rate`` per second.

    Returns when each event was handed to the client (wall clock, seconds) by event id.
    """
    sent: dict[str, float] = {}
    started = time.monotonic()
    with EventProducer(bootstrap, settings=settings, linger_ms=2) as producer:
        for n, event in enumerate(events):
            if rate is not None:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent[event.event_id] = time.time()
            producer.send(event)
            if tick is not None and n % 500 == 0:
                tick(n)
    return sent


def all_partitions(
    consumer: Consumer, topics: list[str], offset: int = OFFSET_BEGINNING
) -> list[TopicPartition]:
    """Every partition of ``topics``, to assign directly (no group join to wait for)."""
    found = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        found += [TopicPartition(topic, partition, offset) for partition in metadata.partitions]
    return found


def raw_consume_rate(bootstrap: str, topics: list[str], expected: int) -> float:
    """Messages/s that a bare confluent-kafka consumer reads from ``topics`` (the ceiling)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(all_partitions(consumer, topics))
    count = 0
    started: float | None = None
    deadline = time.monotonic() + 120
    try:
        while count < expected and time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=1.0)
            if batch and started is None:
                started = time.monotonic()
            count += sum(1 for message in batch if message.error() is None)
    finally:
        consumer.close()
    if started is None or count < expected:
        raise RuntimeError(f"raw consumer read {count} of {expected}")
    return count / max(time.monotonic() - started, 1e-9)


class OutputTail:
    """Reads an output topic from its end on a thread of its own, handing each decoded
    record and its timestamp (seconds) to :meth:`take`."""

    def __init__(self, bootstrap: str, settings: Settings, topic: str) -> None:
        self.codec = Codec(settings.schemas_dir)
        self.topic = topic
        self._record = settings.output_records[topic]
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-tail-{time.monotonic_ns()}",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(all_partitions(self._consumer, [self.topic], OFFSET_END))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, timeout=0.2):
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                _, stamp_ms = message.timestamp()
                self.take(self.codec.decode_record(self._record, value), stamp_ms / 1000)

    def take(self, record: dict[str, Any], stamp_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


class SegmentChangeClock(OutputTail):
    """Notes when each cause's segment change appeared.

    The worker stamps each output with its send time (the record's timestamp), so the
    latency of a change is that stamp minus the moment its cause was produced.
    """

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.first_seen: dict[str, float] = {}
        super().__init__(bootstrap, settings, settings.segment_changes_topic)

    def take(self, record: dict[str, Any], stamp_s: float) -> None:
        self.first_seen.setdefault(record["cause_event_id"], stamp_s)

    def latencies(self, sent: dict[str, float]) -> list[float]:
        return [seen - sent[cause] for cause, seen in self.first_seen.items() if cause in sent]


@dataclass
class LookupLoad:
    """Decision lookups at a fixed rate, timed as a caller sees them.

    The client runs in a process of its own, on one event loop over plain HTTP/1.1
    keep-alive connections: httpx on threads inside the benchmark's process (which also
    produces the load) put more than 2 ms of its own into every request. Each request is
    due at its time and goes out on the next free connection; its latency runs from when it
    was due, so waiting for a connection counts too (a slow answer cannot lower the rate
    unnoticed).
    """

    api: str
    emails: list[str]
    rate: float
    token: str | None = None
    connections: int = 16

    def run(self, duration: float) -> dict[str, float]:
        """Latency percentiles of successful lookups, failures and the rate reached."""
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_run_lookups, self, duration).result()


def _run_lookups(load: LookupLoad, duration: float) -> dict[str, float]:
    latencies, failures = asyncio.run(_lookups(load, duration))
    return {
        **summary_ms(latencies),
        "failures": len(failures),
        "rate": load.rate,
        "rate_reached": (len(latencies) + len(failures)) / duration,
    }


async def _lookups(load: LookupLoad, duration: float) -> tuple[list[float], list[int]]:
    url = urlsplit(load.api)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(load.connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    authorization = f"Authorization: Bearer {load.token}\r\n" if load.token else ""
    latencies: list[float] = []
    failures: list[int] = []

    async def look_up(email: str, due: float) -> None:
        reader, writer = await idle.get()
        writer.write(
            f"GET /decisions/newsletter-popup?email={quote(email)} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\n{authorization}\r\n".encode()
        )
        status = await _read_response(reader)
        elapsed = time.perf_counter() - due
        idle.put_nowait((reader, writer))
        if status == 200:
            latencies.append(elapsed)
        else:
            failures.append(status)

    requests = []
    started = time.perf_counter()
    for n in range(int(load.rate * duration)):
        due = started + n / load.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        requests.append(asyncio.ensure_future(look_up(load.emails[n % len(load.emails)], due)))
    await asyncio.gather(*requests)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return latencies, failures


async def _read_response(reader: asyncio.StreamReader) -> int:
    """The status of one HTTP/1.1 response, whose body is read (and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def write_profile_changelog(
    bootstrap: str,
    topic: str,
    profiles: int,
    templates: list[tuple[bytes, bytes]],
) -> None:
    """``profiles`` distinct profiles in a profile table's changelog, as a worker writes them.

    Building a million profiles through the pipeline would take longer than the benchmark
    may; restore reads only the changelog, so writing it directly measures the same thing.
    Each is a real stored profile (``templates``: key and value from a worker's changelog)
    under a new profile id.
    """

    def records() -> Iterator[tuple[bytes, bytes]]:
        for n in range(profiles):
            template_id, template = templates[n % len(templates)]
            profile_id = b"p_%024d" % n
            yield profile_id, template.replace(template_id, profile_id)

    write_records(bootstrap, topic, records())


def write_records(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """``records`` (key, value) into a table's changelog, each key in the partition its hash
    gives, as the worker's sender places it: the worker reads it only there."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": LIBRDKAFKA_PARTITIONER}
    )
    for n, (key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"{topic} not delivered")
