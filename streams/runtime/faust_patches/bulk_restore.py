"""Restore a table's changelog in bulk, several partitions at once (wraps
``Recovery._build_highwaters``; faust-streaming 0.15)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition
from faust.tables.recovery import Recovery
from rocksdict import WriteBatch, WriteOptions

from streams.runtime.faust_patches.changelog_ends import broker_bootstrap, changelog_reader
from streams.runtime.metrics import (
    RESTORE_SECONDS,
    RESTORED_RECORDS,
)

log = logging.getLogger(__name__)


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
