"""Stages take their topics' messages straight from Faust's fetcher, one fetch at a time.

Faust hands every message through its conductor to a channel queue and on to the agent's
stream: per message an ``asyncio.wait`` over two new futures, an Event, a queue put and get
and four sensor calls. At full load that was about 40 % of the worker's main thread, more
than the stages' own work. Here the fetcher gives the messages of a topic a stage has
claimed to that stage directly, everything one fetch brought in one call.

Topics a stage reads first (its internal hops, privacy requests) are taken before anything
else: each round of the loop first takes all their partitions hold, then a fetch of every
partition of at most ``broker_max_poll_records`` messages. Under a backlog an unbounded
fetch of every partition is seconds of work, and a record on its second or third hop (an
erasure takes several) would wait that long at each of them.

Everything else stays Faust's: group membership, the fetching itself, the read offsets and
gaps kept below, commits (the stage tracks and acknowledges every message through the
consumer), rebalances and table recovery. Topics no stage claimed take Faust's usual path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.types import TP, AppT, Message
from mode import Service

Receiver = Callable[[list[Message]], Awaitable[None]]


def receivers_of(app: AppT) -> dict[str, Receiver]:
    """Topic name -> the stage that takes its messages."""
    receivers: dict[str, Receiver] = app.__dict__.setdefault("stage_receivers", {})
    return receivers


def claim(app: AppT, topics: list[str], receiver: Receiver) -> None:
    """From now on every message fetched from ``topics`` goes to ``receiver``, a fetch at a time.

    Claim before the worker starts: a message taking Faust's path would wait in a queue
    nobody reads.
    """
    receivers = receivers_of(app)
    for topic in topics:
        if receivers.setdefault(topic, receiver) is not receiver:
            raise ValueError(f"topic {topic} is claimed by another stage already")


def read_first(app: AppT, topics: Iterable[str]) -> None:
    """Take what ``topics`` (claimed by a stage) hold before fetching the other topics."""
    first_topics(app).update(topics)


def first_topics(app: AppT) -> set[str]:
    topics: set[str] = app.__dict__.setdefault("stage_first_topics", set())
    return topics


class FetchedForStages:
    """What one fetch brought for each stage, in fetch order.

    A stage gets everything of one fetch in one call, whichever of its topics it came from:
    each call is a batch of its own (its deliveries, table writes and acknowledgements), and a
    worker's one stage reads the input topics and both internal ones, so a call per topic made
    a fetch into as many small batches as it held topics.
    """

    def __init__(self, receivers: dict[str, Receiver]) -> None:
        self._receivers = receivers
        self._messages: dict[Receiver, list[Message]] = {}

    def take(self, message: Message) -> bool:
        """Keep ``message`` for the stage that claimed its topic; False if none did."""
        receiver = self._receivers.get(message.topic)
        if receiver is None:
            return False
        self._messages.setdefault(receiver, []).append(message)
        return True

    async def deliver(self) -> None:
        messages, self._messages = self._messages, {}
        for receiver, fetched in messages.items():
            await receiver(fetched)


def deliver_fetches_to_stages() -> None:
    """Replace Faust's ``Consumer._drain_messages`` (the fetcher's loop) by one that hands
    claimed topics' messages to their stages; it is Faust's loop otherwise."""
    if getattr(Consumer._drain_messages, "delivers_to_stages", False):
        return
    drain = cast(Any, _drain_messages)
    drain.delivers_to_stages = True
    Consumer._drain_messages = drain  # type: ignore[method-assign]


async def _drain_messages(self: Consumer, fetcher: Service) -> None:
    """Faust's ``Consumer._drain_messages`` of faust-streaming 0.15, copied, with the messages
    of claimed topics handed to their stages a fetch at a time; the rest as Faust does.
    tests/unit/test_faust_versions.py fails if the installed original differs."""
    receivers = receivers_of(self.app)
    first = first_topics(self.app)
    callback = self.callback
    read_offset = self._read_offset
    acks_enabled_for = self.app.topics.acks_enabled_for
    # Faust's own loop yields to the event loop every 100 messages it dispatches.
    yield_every = 100
    since_yield = 0
    try:
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):
            self.diag.set_flag(CONSUMER_FETCHING)
            fetched = FetchedForStages(receivers)
            records = _fetch(self, first)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in records:
                    offset = message.offset
                    expected = read_offset[tp]
                    if expected is not None and offset < expected:
                        continue  # read already (Faust drops these too)
                    # A jump over offsets (transaction markers, compaction) counts as
                    # acknowledged, or the commit would wait for it forever.
                    if expected and offset - expected > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, expected + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not fetched.take(message):
                        since_yield += 1
                        if since_yield > yield_every:
                            await self.sleep(0)
                            since_yield = 0
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                await fetched.deliver()
            self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(CONSUMER_FETCHING)


async def _fetch(self: Consumer, first: set[str]) -> AsyncIterator[tuple[TP, Message]]:
    """Everything the partitions of the ``first`` topics hold now, then Faust's fetch of every
    active partition: without waiting if the first brought something, else waiting up to a
    second for data."""
    urgent = {tp for tp in self._get_active_partitions() if tp.topic in first}
    waited = 1.0
    taken = bool(urgent)
    while taken:
        taken = False
        async for item in _getmany_of(self, urgent):
            taken = True
            waited = 0.0
            yield item
    async for item in self.getmany(timeout=waited):
        yield item


async def _getmany_of(self: Consumer, partitions: set[TP]) -> AsyncIterator[tuple[TP, Message]]:
    """Faust's ``getmany`` of ``partitions`` alone, without waiting: its only source of
    the partitions to read (``_wait_next_records`` asks ``_get_active_partitions``) answers
    ``partitions`` while it runs. Only this loop calls ``getmany``."""
    consumer = cast(Any, self)
    consumer._get_active_partitions = lambda: partitions
    try:
        async for item in self.getmany(timeout=0):
            yield item
    finally:
        del consumer._get_active_partitions
