"""What the Faust shells of the stages share: batches, table writes, dead letters, headers.

Faust's per-message path (one ``await`` per send, one changelog record per table write)
costs far more than the stages' own logic. A stage here handles its messages one by one
but sends, writes and acknowledges them in batches. A batch is sealed as soon as nothing
more is buffered for the stage (no latency when it keeps up), at
``CDP_BATCH_MAX_MESSAGES``, or ``CDP_BATCH_WAIT_MS`` after its first message (large batches
under a backlog):

1. each message is handled with :class:`PendingWrites` in front of the stage's table, so
   a key sees its own latest value, decoded once, and everything it sends is queued;
2. the batch is sealed and the stage goes on with the next one;
3. once everything the sealed batch sent is delivered, each key it changed is written to
   the table once (:class:`ChangelogWriter`: one changelog record), and once those records
   are delivered too, its messages are acknowledged.

Batches finish in order, so a commit never passes a message whose outputs or state are
not out yet. A crash anywhere replays from the last commit: outputs are re-sent with the
same ids, and the profile's event-id fingerprints make re-applied events no-ops.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from faust.streams import _current_event
from faust.types import TP

from streams.codec import DeadLetterReason, dead_letter_record, now_ms
from streams.observability import DEAD_LETTERS, EVENTS
from streams.sender import Deliveries, RecordSender, exit_without_committing

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)

Value = TypeVar("Value")

# The input's append time travels along the internal topics, so the last stage can measure
# event-to-output latency across both hops.
RECEIVED_AT_HEADER = "cdp-received-at"

# Table writes or acknowledgements between two returns to the event loop.
ITEMS_PER_SLICE = 32

# Sealed batches a stage may have under way before it waits for the oldest to finish.
BATCHES_IN_FLIGHT = 32

Changes = dict[bytes, tuple[Any, Any]]


class PendingWrites(Generic[Value]):
    """A table's values as the stage changes them: read through, written batch by batch.

    A key changed by a batch that is not written yet is served from here; everything
    else from the table, and only cached for the open batch.
    """

    def __init__(
        self, table: Any, decode: Callable[[bytes], Value], encode: Callable[[Value], bytes]
    ) -> None:
        self._table = table
        self._decode = decode
        self._encode = encode
        self._values: dict[bytes, Value | None] = {}
        self._changed: Changes = {}
        """Changed by the open batch: key -> (value, the message that changed it)."""
        self._unwritten: dict[bytes, int] = {}
        """Changed by a sealed batch not written yet: key -> that batch's number."""
        self._sealed = 0

    def get(self, key: bytes) -> Value | None:
        """The key's value; Faust reads the partition of the message being handled."""
        if key not in self._values:
            stored: bytes | None = self._table.get(key)
            self._values[key] = self._decode(stored) if stored is not None else None
        return self._values[key]

    def set(self, key: bytes, value: Value, item: Any) -> None:
        """Change the key's value because of ``item`` (the message being handled)."""
        self._values[key] = value
        self._changed[key] = (value, item)

    def seal(self) -> tuple[int, Changes]:
        """The open batch's changes, to write once its sends are delivered."""
        number, changes = self._sealed, self._changed
        self._sealed += 1
        self._changed = {}
        for key in changes:
            self._unwritten[key] = number
        for key in [key for key in self._values if key not in self._unwritten]:
            del self._values[key]
        return number, changes

    def write(self, sealed: tuple[int, Changes], put: Callable[[bytes, bytes, Any], None]) -> None:
        """Write a sealed batch's changes: ``put(key, encoded value, message behind it)``."""
        number, changes = sealed
        for key, (value, item) in changes.items():
            put(key, self._encode(value), item)
            if self._unwritten.get(key) == number:
                del self._unwritten[key]
                if key not in self._changed:
                    self._values.pop(key, None)

    @property
    def table(self) -> Any:
        return self._table


class ChangelogWriter:
    """Writes a Faust table as Faust does, value into the partition's database and then a
    changelog record, but sends the record through the sender (a few µs instead of Faust's
    producer path) and persists each partition's changelog offset once it is delivered."""

    def __init__(self, table: Any, sender: RecordSender) -> None:
        self._store = table.data
        self._changelog = table.changelog_topic.get_topic_name()
        self._sender = sender

    def writing(self, deliveries: Deliveries) -> Callable[[bytes, bytes, Any], None]:
        def put(key: bytes, value: bytes, item: Any) -> None:
            partition = item.message.partition
            self._store._db_for_partition(partition).put(key, value)
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
    items: list[Any] = field(default_factory=list)
    deliveries: Deliveries = field(default_factory=Deliveries)
    opened_at: float = 0.0
    changes: list[tuple[int, Changes]] = field(default_factory=list)


class BatchedStage:
    """Runs ``handle`` on every message of a Faust stream, batch by batch (see the module)."""

    def __init__(
        self,
        runtime: Runtime,
        stream: Any,
        handle: Callable[[Any], None],
        tables: tuple[PendingWrites[Any], ...],
    ) -> None:
        self.runtime = runtime
        self.stream = stream
        self.handle = handle
        self.tables = tables
        self.max_messages = runtime.settings.batch_max_messages
        self.wait_s = runtime.settings.batch_wait_ms / 1000
        self.open = Batch()
        self.sealed: asyncio.Queue[Batch] = asyncio.Queue()
        self.finished = asyncio.Event()

    async def run(self) -> None:
        # The stage acknowledges each message itself, once its batch is finished.
        self.stream.enable_acks = False
        self.runtime.sender.start_polling()
        helpers = [
            asyncio.ensure_future(self._guarded(self._seal_when_due())),
            asyncio.ensure_future(self._guarded(self._finish_in_order())),
        ]
        loop = asyncio.get_running_loop()
        try:
            async for item in self.stream.events():
                batch = self.open
                if not batch.items:
                    batch.opened_at = loop.time()
                handling(item)
                self.runtime.sender.deliveries = batch.deliveries
                dead_letter_on_error(self.runtime, item, self.handle)
                batch.items.append(item)
                if (
                    len(batch.items) >= self.max_messages
                    or self._nothing_waiting()
                    or loop.time() - batch.opened_at >= self.wait_s
                ):
                    self._seal()
                while self.sealed.qsize() >= BATCHES_IN_FLIGHT:
                    self.finished.clear()
                    await self.finished.wait()
        finally:
            for helper in helpers:
                helper.cancel()

    def _nothing_waiting(self) -> bool:
        """No message is buffered for this stream: sealing now costs no batch size."""
        queue = getattr(self.stream.channel, "queue", None)
        return queue is not None and bool(queue.empty())

    def _seal(self) -> None:
        batch = self.open
        batch.changes = [table.seal() for table in self.tables]
        batch.deliveries.seal()
        self.sealed.put_nowait(batch)
        self.open = Batch()

    async def _seal_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.wait_s / 2)
            if self.open.items and loop.time() - self.open.opened_at >= self.wait_s:
                self._seal()

    async def _finish_in_order(self) -> None:
        writers = [ChangelogWriter(table.table, self.runtime.sender) for table in self.tables]
        while True:
            batch = await self.sealed.get()
            await batch.deliveries.done.wait()
            changelog = Deliveries(track_offsets=True)
            for table, writer, (number, changes) in zip(
                self.tables, writers, batch.changes, strict=True
            ):
                put = writer.writing(changelog)
                for keys in _slices(list(changes)):
                    table.write((number, {key: changes[key] for key in keys}), put)
                    await asyncio.sleep(0)
            changelog.seal()
            await changelog.done.wait()
            for writer in writers:
                writer.persist_offsets(changelog)
            for items in _slices(batch.items):
                for item in items:
                    await self.stream.ack(item)
                await asyncio.sleep(0)
            self.finished.set()

    async def _guarded(self, helper: Any) -> None:
        try:
            await helper
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A stage whose batches no longer finish would hold its partitions forever.
            log.exception("a stage's batch helper failed")
            exit_without_committing(f"a stage's batch helper failed: {type(exc).__name__}")


async def consume_in_batches(
    runtime: Runtime,
    stream: Any,
    handle: Callable[[Any], None],
    tables: tuple[PendingWrites[Any], ...] = (),
) -> None:
    """Run ``handle`` on every message of ``stream``, batch by batch (see the module)."""
    await BatchedStage(runtime, stream, handle, tables).run()


def _slices(items: list[Value]) -> list[list[Value]]:
    """``items`` in slices small enough that the event loop, and with it the lookups, is
    never held up for long by one batch."""
    return [items[i : i + ITEMS_PER_SLICE] for i in range(0, len(items), ITEMS_PER_SLICE)]


def handling(item: Any) -> None:
    """Make ``item`` the current event of this task: Faust's tables read and write the
    partition of the current event. Only the context variable: the stream's own
    ``current_event`` is Faust's bookkeeping."""
    _current_event.set(weakref.ref(item))


def headers_of(carrier: Any) -> dict[str, bytes]:
    """The headers of a Faust event or message; aiokafka hands them over as pairs, Faust as
    a dict."""
    headers = carrier.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {key: bytes(value) for key, value in pairs}


def passed_on(headers: dict[str, bytes]) -> dict[str, bytes]:
    """The headers a stage passes on with what it sends: the input's append time."""
    received_at = headers.get(RECEIVED_AT_HEADER)
    return {RECEIVED_AT_HEADER: received_at} if received_at else {}


def send_dead_letter(runtime: Runtime, message: Any, reason: DeadLetterReason, detail: str) -> None:
    """Dead-letter ``message`` (a Faust Message) with its original bytes and where it came from."""
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


def dead_letter_on_error(runtime: Runtime, item: Any, handle: Callable[[Any], None]) -> None:
    """Handle one message; should that fail, dead-letter it instead of stopping.

    A bug for one message must not stop the partition, nor drop the message silently the
    way Faust would: it goes to the dead letters with the reason. The steps are pure, so a
    failed message has changed no table value.
    """
    try:
        handle(item)
    except Exception as exc:
        # The frames only: an exception's message may quote personal data from the event.
        message = item.message
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
