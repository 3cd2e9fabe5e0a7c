"""Fixes to Faust internals that correctness or latency depends on, each one small and explained.

Every fix replaces one Faust (or aiokafka-driver) method or function, is idempotent
(applying it twice changes nothing) and is applied by :func:`apply` before the app is built.
Each was found by a test against the real broker or by profiling a worker; the docstrings say
which failure or delay it prevents.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ack_lock
from faust.utils import venusian
from mode.utils.futures import notify
from rocksdict import WriteBatch, WriteOptions

from streams.observability import (
    REBALANCE_SKIPPED_MESSAGES,
    REREAD_PARTITIONS,
    RESTORE_SECONDS,
    RESTORED_RECORDS,
)
from streams.runtime.broker_kind import is_embedded_broker
from streams.runtime.kafka_clients import client_config

log = logging.getLogger(__name__)


def apply(fetch_max_wait_ms: int) -> None:
    cap_fetch_wait(fetch_max_wait_ms)
    read_changelogs_to_their_true_end()
    restore_in_bulk()
    start_tables_at_once()
    mark_nothing_for_discovery()
    commit_only_processed_messages()
    read_again_after_seeks()


def cap_fetch_wait(max_wait_ms: int) -> None:
    """Cap how long a fetch may wait for data; Faust hard-codes 1,500 ms.

    Brokers that hold a fetch for its whole max wait instead of answering when data arrives
    (the embedded broker does) would otherwise add up to 1.5 s per pipeline stage.
    """
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "capped_fetch_wait", None) == max_wait_ms:
        return
    original = getattr(create, "original", create)

    def create_capped(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    create_capped.original = original  # type: ignore[attr-defined]
    create_capped.capped_fetch_wait = max_wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_capped  # type: ignore[method-assign]


def changelog_reader(bootstrap: str, group_id: str) -> KafkaConsumer:
    """A confluent-kafka consumer for reading changelog partitions it is assigned; it
    commits nothing, so ``group_id`` only names it."""
    return KafkaConsumer(
        {
            **client_config(bootstrap),
            "group.id": group_id,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )


def broker_bootstrap(app: Any) -> str:
    """The bootstrap servers of a Faust app, as confluent-kafka takes them."""
    return ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)


def last_offsets(
    bootstrap: str, reported: dict[tuple[str, int], int], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """The offset of the last record of each partition, read from the broker's records.

    ``reported`` holds the last offset a partition's end suggests; on brokers that report
    the start of the last record batch, that batch is read to its end.
    """
    consumer = changelog_reader(bootstrap, "cdp-changelog-ends")
    last = dict(reported)
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in reported.items()])
        seen: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Once every partition gave a record, what is left of its last batch came with
            # it: a short wait for stragglers is enough (a worker is not ready before this).
            wait_s = 0.05 if seen >= reported.keys() else 0.3
            batch = consumer.consume(10_000, timeout=wait_s)
            if not batch and seen >= reported.keys():
                break
            for message in batch:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if message.error() or topic is None or partition is None or offset is None:
                    continue
                seen.add((topic, partition))
                last[topic, partition] = max(last[topic, partition], offset)
    finally:
        consumer.close()
    return last


def ends_to_read(
    reported: Mapping[TP, int], persisted: Mapping[TP, int | None]
) -> dict[tuple[str, int], int]:
    """The partitions whose last record must be read from the broker, with the end reported.

    Local state that reaches into the last batch holds all of it (its worker wrote or read
    that batch whole), so after a clean restart there are none.
    """
    unknown = {}
    for tp, end in reported.items():
        local = persisted.get(tp)
        if end >= 0 and (local is None or local < end):
            unknown[tp.topic, tp.partition] = end
    return unknown


def read_changelogs_to_their_true_end() -> None:
    """Recover a table up to the last record its changelog holds, not where the broker says.

    The embedded broker (Tansu 0.6.0) answers ListOffsets with the base offset of the last
    record batch plus one, not the offset after its last record. Faust recovers up to that
    reported end, so a worker taking over a partition missed the tail of the last batch
    of table writes, and the next event applied to such a profile built on stale state (the
    join/kill test lost a page view this way). Faust also refused to recover at all
    ("persisted offset is higher than the highwater") when a worker took back a partition
    it had written. Here the last batch is read to its end first. On Kafka the reported
    end is exact, and the check is skipped (:mod:`streams.runtime.broker_kind`).
    """
    build = Recovery._build_highwaters
    if getattr(build, "reads_to_true_end", False):
        return

    @functools.wraps(build)
    async def build_highwaters(
        self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await build(self, consumer, tps, destination, title)
        if not await asyncio.to_thread(is_embedded_broker, broker_bootstrap(self.app)):
            return
        persisted = {tp: self.tp_to_table[tp].persisted_offset(tp) for tp in tps}
        to_read = ends_to_read({tp: destination[tp] for tp in tps}, persisted)
        if to_read:
            bootstrap = broker_bootstrap(self.app)
            last = await asyncio.to_thread(last_offsets, bootstrap, to_read)
            for tp in tps:
                destination[tp] = max(destination[tp], last.get((tp.topic, tp.partition), -1))
        for tp in tps:
            local = persisted[tp]
            if local is not None and local > destination[tp]:
                destination[tp] = local

    build_highwaters.reads_to_true_end = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]


BULK_RESTORE_MIN_RECORDS = 1_000
BULK_RESTORE_WRITE_RECORDS = 1_000  # larger write batches grow by copying
BULK_RESTORE_READERS = 2


def _without_wal() -> WriteOptions:
    options = WriteOptions()
    # A property, though rocksdict's stub declares a method.
    options.disable_wal = True  # type: ignore[method-assign,assignment]
    return options


_WITHOUT_WAL = _without_wal()


@dataclass
class PartitionRestore:
    """Changelog records ``first``..``last`` of one partition, to write into ``db``."""

    first: int
    last: int
    db: Any  # a rocksdict database
    written: int = field(init=False)
    """The offset of the last record written (``first - 1``: none yet)."""
    batch: WriteBatch = field(default_factory=lambda: WriteBatch(raw_mode=True))
    pending: int = 0

    def __post_init__(self) -> None:
        self.written = self.first - 1

    def add(self, key: bytes, value: bytes | None, offset: int) -> None:
        if value is None:
            self.batch.delete(key)
        else:
            self.batch.put(key, value)
        self.pending += 1
        self.written = offset
        if self.pending >= BULK_RESTORE_WRITE_RECORDS or offset >= self.last:
            self.write()

    def write(self) -> None:
        if self.pending:
            self.db.write(self.batch, _WITHOUT_WAL)
            self.batch, self.pending = WriteBatch(raw_mode=True), 0

    def make_durable(self) -> None:
        """Write what is pending and flush the database: written without a write-ahead
        log, the records are on disk only once their memtables are flushed."""
        self.write()
        self.db.flush()

    @property
    def done(self) -> bool:
        return self.written >= self.last


def restore_partitions(
    bootstrap: str,
    restores: dict[tuple[str, int], PartitionRestore],
    stop: threading.Event | None = None,
    idle_s: float = 10.0,
) -> None:
    """Read each partition's records with one confluent-kafka consumer into its database,
    until all are done, ``stop`` is set, or the broker gives nothing for ``idle_s``."""
    consumer = changelog_reader(bootstrap, "cdp-bulk-restore")
    try:
        consumer.assign([TopicPartition(t, p, r.first) for (t, p), r in restores.items()])
        idle_since = time.monotonic()
        while not all(r.done for r in restores.values()):
            if time.monotonic() - idle_since > idle_s or (stop is not None and stop.is_set()):
                break
            messages = consumer.consume(10_000, timeout=0.5)
            if messages:
                idle_since = time.monotonic()
            for message in messages:
                restore = restores.get((message.topic(), message.partition()))  # type: ignore[arg-type]
                offset, key = message.offset(), message.key()
                if restore is None or offset is None or key is None or message.error():
                    continue
                if restore.first <= offset <= restore.last:
                    restore.add(key, message.value(), offset)
        for restore in restores.values():
            restore.make_durable()
    finally:
        consumer.close()


def restore_in_bulk() -> None:
    """Restore a table partition far behind its changelog in bulk, before Faust recovers.

    Faust applies a changelog one record at a time through the event loop (a queue, a
    timeout task and a check of every partition per record): about 5,000 profiles/s here,
    over three minutes for a million. A partition at least
    :data:`BULK_RESTORE_MIN_RECORDS` behind is instead read with confluent-kafka and
    written to its database in write batches, and its persisted offset set to the last
    record written, after Faust knows the end of each changelog and before it reads the
    offsets it recovers from; Faust then recovers only what is left, as usual. The data is
    written before the offset, so a crash in between only makes the next start redo it.
    """
    build = Recovery._build_highwaters
    if getattr(build, "restores_in_bulk", False):
        return

    @functools.wraps(build)
    async def build_highwaters_and_restore(
        self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await build(self, consumer, tps, destination, title)
        if title != "active":
            return
        restores: dict[Any, PartitionRestore] = {}
        stores: dict[Any, Any] = {}
        for tp in tps:
            table: Any = self.tp_to_table[tp]
            persisted = table.persisted_offset(tp)
            first = 0 if persisted is None else persisted + 1
            last = destination[tp]
            if last - first + 1 >= BULK_RESTORE_MIN_RECORDS:
                stores[tp] = store = table.data
                restores[tp] = PartitionRestore(first, last, store._db_for_partition(tp.partition))
        if not restores:
            return
        bootstrap = broker_bootstrap(self.app)
        started = time.monotonic()
        by_partition = {(tp.topic, tp.partition): restore for tp, restore in restores.items()}
        stop = threading.Event()
        # Each reader is a consumer of its own: the records' Python loop of one overlaps
        # the other's fetching and database writes, which run without the GIL.
        items = list(by_partition.items())
        shares = [dict(items[i::BULK_RESTORE_READERS]) for i in range(BULK_RESTORE_READERS)]
        readers = [asyncio.to_thread(restore_partitions, bootstrap, s, stop) for s in shares if s]
        try:
            await asyncio.gather(*readers)
        except BaseException:
            # A rebalance restarts recovery (cancelled), or a reader failed: no reader may go
            # on writing into databases of partitions this worker may no longer hold.
            stop.set()
            raise
        for tp, restore in restores.items():
            if restore.written >= restore.first:
                # Only after the data is durable (make_durable), so a crash redoes it.
                stores[tp].set_persisted_offset(tp, restore.written)
                # Faust read the offsets it recovers from at assignment, before this.
                self.active_offsets[tp] = restore.written
        restored = sum(r.written - r.first + 1 for r in restores.values())
        took_s = time.monotonic() - started
        RESTORED_RECORDS.inc(restored)
        RESTORE_SECONDS.inc(took_s)
        log.info(
            "restored %d records of %d changelog partitions in bulk in %.1f s",
            restored,
            len(restores),
            took_s,
        )

    build_highwaters_and_restore.restores_in_bulk = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters_and_restore  # type: ignore[method-assign]


def start_tables_at_once() -> None:
    """Start the tables (and so join the consumer group) without Faust's fixed 1 s wait.

    Faust's table manager sleeps a second before it starts, giving late tables time to be
    declared; every table here exists before the app starts, so the second only delays
    every start and restart (about a fifth of a restart with local state).
    """
    if getattr(TableManager.on_start, "starts_at_once", False):
        return

    async def on_start(self: TableManager) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    on_start.starts_at_once = True  # type: ignore[attr-defined]
    TableManager.on_start = on_start  # type: ignore[method-assign]


def mark_nothing_for_discovery() -> None:
    """Skip the marks Faust's decorators leave for autodiscovery, which the app has off.

    ``@app.agent`` and ``@app.page`` mark what they decorate for venusian, whose mark reads
    the caller's source file and searches ``sys.modules`` for its module: 60-90 ms of every
    worker start for the app's eleven agents and views, for a scan that never runs.
    """
    if getattr(venusian.attach, "marks_nothing", False):
        return

    def attach(*args: Any, **kwargs: Any) -> None:
        return None

    attach.marks_nothing = True  # type: ignore[attr-defined]
    venusian.attach = attach


def commit_only_processed_messages() -> None:
    """Never count a message as safe to commit when the stream skipped it in a rebalance.

    While a rebalance is under way (flow stopped), or afterwards for a message of an older
    consumer generation, Faust's stream skips the message it takes from its buffer and
    then *acknowledges* it, so the next commit could move past an event nobody applied.
    Here such an acknowledgement only releases the message (a revocation waiting for
    in-flight messages must not hang) without making its offset committable. After the
    rebalance the partition is read again from its committed offset; had a stream applied
    the message after all, applying it again is a no-op (de-duplication by event id).
    Counted in ``cdp_rebalance_skipped_messages_total``.
    """
    if getattr(Consumer.ack, "commits_only_processed", False):
        return
    ack = Consumer.ack

    def ack_processed(self: Consumer, message: Any) -> bool:
        app = self.app
        if app.flow_control.is_active() and message.generation_id == app.consumer_generation_id:
            return ack(self, message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
        REBALANCE_SKIPPED_MESSAGES.inc()
        return False

    ack_processed.commits_only_processed = True  # type: ignore[attr-defined]
    Consumer.ack = ack_processed  # type: ignore[method-assign]


@dataclass
class Seeks:
    """Per partition: how many seeks have started, and how many are under way."""

    started: collections.Counter[Any] = field(default_factory=collections.Counter)
    under_way: collections.Counter[Any] = field(default_factory=collections.Counter)

    def begin(self, partitions: Iterable[Any]) -> None:
        self.started.update(partitions)
        self.under_way.update(partitions)

    def end(self, partitions: Iterable[Any]) -> None:
        self.under_way.subtract(partitions)

    def token(self) -> dict[Any, int | None]:
        """What a fetch starting now remembers; ``None``: a seek of the partition is under way."""
        return {tp: None if self.under_way[tp] > 0 else n for tp, n in self.started.items()}

    def fresh(self, tp: Any, token: dict[Any, int | None]) -> bool:
        """Did the fetch that ``token`` belongs to start after the partition's latest seek?"""
        return token.get(tp, 0) == self.started[tp]


def read_again_after_seeks() -> None:
    """Hand on only records read from where the partition was last sought; read others again.

    This is what made the SIGKILL suite lose 3 to 111 input events in about half of its
    runs. In a rebalance Faust seeks each partition back to its committed offset, but:
    - a fetch under way at that moment still returns records of the old position, and
      Faust handed them on;
    - aiokafka does not seek a partition without a committed offset (or at offset 0), so
      it went on from wherever it had fetched to before the rebalance.
    Either way the reader jumped past records it never handed on. Faust takes any such jump
    for a gap (meant for transaction markers), commits over it and drops the records when
    they do come, as already read. Here:
    - every seek is tracked, and partitions without a commit start over at offset 0;
    - records of a fetch that overlapped a seek of their partition are dropped, and the
      partition is sought back to its committed offset;
    - a jump past the next expected offset is read again once from that offset: if the
      same jump comes back it is a real gap (transaction markers, compaction) and passes.
    Reading again is safe because applying an event twice is a no-op (de-duplication by
    event id). Counted in ``cdp_partitions_reread_total``.
    """
    consumer_class: Any = AIOKafkaConsumer
    if getattr(consumer_class.getmany, "reads_again_after_seeks", False):
        return
    fetch, getmany = consumer_class._getmany, consumer_class.getmany
    seek, perform_seek = consumer_class.seek, consumer_class.perform_seek

    def seeks_of(consumer: Any) -> Seeks:
        seeks: Seeks = consumer.__dict__.setdefault("seeks", Seeks())
        return seeks

    async def seek_tracked(self: Any, partition: Any, offset: int) -> None:
        seeks = seeks_of(self)
        seeks.begin([partition])
        try:
            await seek(self, partition, offset)
        finally:
            seeks.end([partition])

    async def perform_seek_tracked(self: Any) -> None:
        seeks = seeks_of(self)
        # The partitions streams read; table recovery positions the changelogs itself.
        streamed = [tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)]
        seeks.begin(streamed)
        try:
            await perform_seek(self)
            for tp in streamed:
                if not self._committed_offset.get(tp):
                    await seek(self, tp, 0)
        finally:
            seeks.end(streamed)

    async def fetch_tracked(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.__dict__["fetch_token"] = seeks_of(self).token()
        return await fetch(self, *args, **kwargs)

    async def getmany_fresh(self: Any, *args: Any, **kwargs: Any) -> Any:
        seeks = seeks_of(self)
        checked_jumps: dict[Any, tuple[int, int]] = self.__dict__.setdefault("checked_jumps", {})
        # Partition -> offset to read again from; None: from its committed offset.
        read_again: dict[Any, int | None] = {}
        async for tp, message in getmany(self, *args, **kwargs):
            if tp in read_again:
                continue
            if not seeks.fresh(tp, self.__dict__["fetch_token"]):
                read_again[tp] = None
                continue
            # Faust would take a jump past the offset it expects for a gap and commit
            # over it. Read from the expected offset once more first: a jump that comes
            # back is a real gap (transaction markers, compaction), one that does not
            # was a stale position.
            expected = self._read_offset.get(tp)
            jump = (expected, message.offset)
            if expected and message.offset - expected > 1 and checked_jumps.get(tp) != jump:
                checked_jumps[tp] = jump
                read_again[tp] = expected
                continue
            yield tp, message
        for tp, offset in read_again.items():
            # A seek under way may already have passed this partition: seek after it.
            # (Polled: seeks are short, and Seeks stays free of objects bound to a loop.)
            while seeks.under_way[tp]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if tp in self.assignment():
                REREAD_PARTITIONS.inc()
                start = offset if offset is not None else self._committed_offset.get(tp) or 0
                await seek_tracked(self, tp, start)

    getmany_fresh.reads_again_after_seeks = True  # type: ignore[attr-defined]
    consumer_class._getmany = fetch_tracked
    consumer_class.getmany = getmany_fresh
    consumer_class.seek = seek_tracked
    consumer_class.perform_seek = perform_seek_tracked
