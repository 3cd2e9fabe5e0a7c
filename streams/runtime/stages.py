"""What the Faust shells of the stages share: batches, table writes, dead letters, headers.

Faust's per-message path (its conductor, channel queue and stream; one ``await`` per send;
one changelog record per table write) costs far more than the stages' own logic. A stage
here takes the messages of its topics straight from the fetcher, everything one fetch
brought at a time (:mod:`streams.runtime.faust_patches.fetches`), handles them one by one,
and sends, writes and acknowledges them in batches. A batch is what one fetch brought, at most
``CDP_BATCH_MAX_MESSAGES``: small while the stage keeps up (no added latency), large under a
backlog.

1. each message is handled with :class:`PendingWrites` in front of the stage's table, so
   a key sees its own latest value, decoded once, and everything it sends is queued;
2. the batch is sealed and the stage goes on with the next one;
3. once everything the sealed batch sent is delivered, each key it changed is written to
   the table once (:class:`ChangelogWriter`: one changelog record), and once those records
   are delivered too, its messages are acknowledged.

Batches finish in order, so a commit never passes a message whose outputs or state are
not out yet. A crash anywhere replays from the last commit: outputs are re-sent with the
same ids, and the profile's event-id fingerprints make re-applied events no-ops.

Exactly once (``CDP_PROCESSING_GUARANTEE=exactly_once``), step 3 ends by committing the
batch's sends, its changelog records and its input offsets in one Kafka transaction, before
its messages are acknowledged (Faust's own commits then send nothing:
:mod:`streams.runtime.faust_patches.commits`). A transaction takes everything the producer
sent since the last one, so one batch is under way at a time: nothing is handled while a
batch finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.types import TP, Message

from streams.codec import DeadLetterReason, dead_letter_record
from streams.events import now_ms
from streams.runtime.faust_patches import fetches
from streams.runtime.metrics import DEAD_LETTERS, EVENTS, REBALANCE_SKIPPED_MESSAGES
from streams.runtime.pending import Changes, PendingWrites, Put
from streams.runtime.sender import Deliveries, RecordSender, exit_without_committing

if TYPE_CHECKING:
    from streams.runtime.context import Runtime

log = logging.getLogger(__name__)

# Longest a stage works (handling, writing, acknowledging) without returning to the event
# loop: about how long a lookup may wait behind it.
SLICE_SECONDS = 0.001

# Sealed batches a stage may have under way before it waits for the oldest to finish.
BATCHES_IN_FLIGHT = 32


class ChangelogWriter:
    """Writes a Faust table as Faust does, value into the partition's database and then a
    changelog record, but sends the record through the sender (a few µs instead of Faust's
    producer path) and persists each partition's changelog offset once it is delivered."""

    def __init__(self, table: Any, sender: RecordSender) -> None:
        self._store = table.data
        self._changelog = table.changelog_topic.get_topic_name()
        self._sender = sender

    def writing(self, deliveries: Deliveries) -> Put:
        def put(key: bytes, value: bytes | None, partition: int) -> None:
            db = self._store._db_for_partition(partition)
            if value is None:
                # Erased: the changelog gets a tombstone, so compaction removes the key too.
                db.delete(key)
            else:
                db.put(key, value)
            self._sender.queue(
                self._changelog, key, value, partition=partition, deliveries=deliveries
            )

        return put

    def persist_offsets(self, deliveries: Deliveries) -> None:
        """Remember how far each partition's database holds its changelog (for recovery)."""
        for (topic, partition), offset in (deliveries.last_offsets or {}).items():
            if topic == self._changelog:
                self._store.set_persisted_offset(TP(topic, partition), offset)


@dataclass
class Batch:
    messages: list[Message] = field(default_factory=list)
    deliveries: Deliveries = field(default_factory=Deliveries)
    changes: list[tuple[int, Changes]] = field(default_factory=list)
    generation: int | None = None
    """The consumer generation the batch was sealed in."""


class BatchedStage:
    """Runs ``handle`` on every message fetched from ``topics``, batch by batch (see the
    module). Create it before the worker starts; :meth:`run` is the body of its agent.

    ``first``: those of ``topics`` whose messages are taken before the others'
    (:func:`~streams.runtime.faust_patches.fetches.read_first`)."""

    def __init__(
        self,
        runtime: Runtime,
        topics: list[str],
        handle: Callable[[Message], None],
        tables: tuple[PendingWrites[Any], ...] = (),
        first: tuple[str, ...] = (),
    ) -> None:
        self.runtime = runtime
        self.handle = handle
        self.tables = tables
        self.max_messages = runtime.settings.batch_max_messages
        self.open = Batch()
        self.sealed: asyncio.Queue[Batch] = asyncio.Queue()
        self.unfinished = 0
        """Batches sealed and not finished yet."""
        self.in_flight = 1 if runtime.sender.transactional else BATCHES_IN_FLIGHT
        """Most unfinished batches while the stage handles messages."""
        self.finished = asyncio.Event()
        self._finisher: asyncio.Future[None] | None = None
        self._generation: int | None = None
        self.applied_offsets: dict[TP, int] = {}
        """Per partition, the offset of the last message whose batch finished (this
        generation): its outputs and writes are out."""
        fetches.claim(runtime.app, topics, self.receive)
        fetches.read_first(runtime.app, first)

    async def run(self) -> None:
        """Finish sealed batches for as long as the worker runs."""
        await self._started()

    def _started(self) -> asyncio.Future[None]:
        if self._finisher is None:
            self.runtime.sender.start_polling()
            self._finisher = asyncio.ensure_future(self._guarded(self._finish_in_order()))
        return self._finisher

    async def receive(self, messages: list[Message]) -> None:
        """Handle what one fetch brought for this stage; seal it as one batch or more."""
        self._started()
        self._follow_generation()
        app = self.runtime.app
        consumer = app.consumer
        sender = self.runtime.sender
        share = LoopShare()
        for message in messages:
            if (
                not app.flow_control.is_active()
                or message.generation_id != app.consumer_generation_id
            ):
                # Fetched before a rebalance: the partition is read again from its
                # committed offset once it is over.
                REBALANCE_SKIPPED_MESSAGES.inc()
                continue
            if self.unfinished >= self.in_flight:
                await self._room()
            consumer.track_message(message)
            batch = self.open
            sender.deliveries = batch.deliveries
            dead_letter_on_error(self.runtime, message, self.handle)
            batch.messages.append(message)
            if len(batch.messages) >= self.max_messages:
                await self._seal()
            await share.yield_when_due()
        if self.open.messages:
            await self._seal()

    async def run_unfetched(self, work: Iterable[Callable[[], None]]) -> None:
        """Do ``work`` that no fetched message carries (the worker's own segment rechecks)
        in the open batch, and seal it: it is written once its sends are delivered, like a
        fetch's, and acknowledges nothing of its own."""
        self._started()
        self._follow_generation()
        sender = self.runtime.sender
        share = LoopShare()
        for item in work:
            if self.unfinished >= self.in_flight:
                await self._room()
            sender.deliveries = self.open.deliveries
            item()
            await share.yield_when_due()
        await self._seal()

    def _follow_generation(self) -> None:
        """After a rebalance the tables' values kept from earlier batches may be stale."""
        generation = self.runtime.app.consumer_generation_id
        if generation != self._generation:
            self._generation = generation
            self._forget_recent()
            self.applied_offsets.clear()

    def _forget_recent(self) -> None:
        for table in self.tables:
            table.forget_recent()

    async def _seal(self) -> None:
        batch = self.open
        batch.generation = self._generation
        batch.changes = [table.seal() for table in self.tables]
        batch.deliveries.seal()
        self.sealed.put_nowait(batch)
        self.unfinished += 1
        self.open = Batch()
        await self._room()

    async def _room(self) -> None:
        """Wait until fewer than ``in_flight`` batches are unfinished."""
        while self.unfinished >= self.in_flight:
            self.finished.clear()
            await self.finished.wait()

    async def _finish_in_order(self) -> None:
        writers = [ChangelogWriter(table.table, self.runtime.sender) for table in self.tables]
        consumer = self.runtime.app.consumer
        while True:
            batch = await self.sealed.get()
            await batch.deliveries.done.wait()
            changelog = Deliveries(track_offsets=True)
            for table, writer, (number, changes) in zip(
                self.tables, writers, batch.changes, strict=True
            ):
                put = writer.writing(changelog)
                share = LoopShare()
                for key, change in changes.items():
                    table.write((number, {key: change}), put)
                    await share.yield_when_due()
            if batch.generation != self._generation:
                # Written after a rebalance: what it kept of its values is not to be trusted.
                self._forget_recent()
            changelog.seal()
            await changelog.done.wait()
            if self.runtime.sender.transactional:
                await self._commit(batch)
            for writer in writers:
                writer.persist_offsets(changelog)
            share = LoopShare()
            current = batch.generation == self._generation
            for message in batch.messages:
                consumer.ack(message)
                if current:
                    self.applied_offsets[message.tp] = message.offset
                await share.yield_when_due()
            self.unfinished -= 1
            self.finished.set()

    async def _commit(self, batch: Batch) -> None:
        """Commit the batch's transaction with the offsets after its messages."""
        if batch.generation != self.runtime.app.consumer_generation_id:
            # Its partitions may be another worker's now, which reads the batch again.
            exit_without_committing("a batch outlived its consumer generation (exactly_once)")
        offsets: dict[tuple[str, int], int] = {}
        for message in batch.messages:
            where = (message.topic, message.partition)
            offsets[where] = max(offsets.get(where, 0), message.offset + 1)
        await self.runtime.sender.commit(offsets)

    async def _guarded(self, helper: Any) -> None:
        try:
            await helper
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A stage whose batches no longer finish would hold its partitions forever.
            log.exception("a stage's batch helper failed")
            exit_without_committing(f"a stage's batch helper failed: {type(exc).__name__}")


class LoopShare:
    """Returns to the event loop once the work since the last return took ``SLICE_SECONDS``,
    so lookups and the other stages are never held up long by one batch."""

    def __init__(self) -> None:
        self._due = time.perf_counter() + SLICE_SECONDS

    async def yield_when_due(self) -> None:
        if time.perf_counter() >= self._due:
            await asyncio.sleep(0)
            self._due = time.perf_counter() + SLICE_SECONDS


def headers_of(carrier: Any) -> dict[str, bytes]:
    """The headers of a Faust event or message; aiokafka hands them over as pairs, Faust as
    a dict."""
    headers = carrier.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {key: bytes(value) for key, value in pairs}


def key_and_value(message: Message) -> tuple[bytes, bytes]:
    """Key and value of a message on an internal topic, where the stages always set both."""
    if message.key is None or message.value is None:
        raise ValueError("a message on an internal topic has no key or no value")
    return message.key, message.value


def send_dead_letter(runtime: Runtime, message: Any, reason: DeadLetterReason, detail: str) -> None:
    """Dead-letter ``message`` (a Faust Message, or one like it) with its original bytes and
    where it came from."""
    record = dead_letter_record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        detail=detail,
        now_ms=now_ms(),
        headers=headers_of(message),
    )
    runtime.sender.queue(
        runtime.settings.dead_letter_topic,
        message.key,
        runtime.encode_output("DeadLetter", record),
    )
    DEAD_LETTERS.labels(reason.value).inc()
    EVENTS.labels(message.topic, "dead_lettered").inc()


def dead_letter_on_error(
    runtime: Runtime, message: Message, handle: Callable[[Message], None]
) -> None:
    """Handle one message; should that fail, dead-letter it instead of stopping.

    A bug for one message must not stop the partition, nor drop the message silently the
    way Faust would: it goes to the dead letters with the reason. The steps are pure, so a
    failed message has changed no table value.
    """
    try:
        handle(message)
    except Exception as exc:
        dead_letter_failure(runtime, message, exc)


def dead_letter_failure(runtime: Runtime, message: Any, exc: Exception) -> None:
    """Dead-letter ``message``, whose handling raised ``exc``, and log where it failed."""
    # The frames only: an exception's message may quote personal data from the event.
    log.error(
        "processing failed for the message at %s[%s]@%s (%s); dead-lettered\n%s",
        message.topic,
        message.partition,
        message.offset,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    send_dead_letter(
        runtime, message, DeadLetterReason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"
    )
