"""Consumer lag: how many messages of each partition a worker holds are still unread.

The worker asks the broker for the end offsets of the partitions its stages read (the
input and internal topics) and compares them with how far it has read each one. The
answer is ``cdp_consumer_lag_messages{topic, partition}``; a partition the worker no
longer holds loses its series, so after a rebalance each partition is reported by its
new owner only. A broker that does not answer leaves the last values in place: the lag
is then unknown, and ``cdp_broker_reachable`` says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from faust.types import TP

from streams.events import now_ms
from streams.runtime.faust_patches import fetches
from streams.runtime.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)


def partition_lag(end_offset: int | None, read_offset: int | None) -> int | None:
    """Messages of a partition not yet read, or None when it cannot be told.

    ``end_offset`` is the offset the next appended message will get. ``read_offset`` is
    Faust's: the offset of the last message read, or right after a seek the committed
    offset (the next one to read); reading it as the former can under-count by one until
    the first message after a rebalance is read, never over-count.
    """
    if end_offset is None:
        return None
    if read_offset is None:
        # Nothing read and nothing committed yet: the worker starts at the beginning.
        return max(0, end_offset)
    return max(0, end_offset - (read_offset + 1))


def lags(
    end_offsets: Mapping[TP, int | None], read_offsets: Mapping[TP, int | None]
) -> dict[TP, int]:
    """Lag of every partition whose end offset is known."""
    found = {}
    for tp, end in end_offsets.items():
        lag = partition_lag(end, read_offsets.get(tp))
        if lag is not None:
            found[tp] = lag
    return found


class Ends(NamedTuple):
    """End offsets as the broker answered a request sent at ``asked_at`` (ms): every record
    produced before then is below them."""

    asked_at: int
    offsets: Mapping[TP, int]


class EndOffsets:
    """Asks the broker for the end offsets of the partitions the worker's stages read."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s
        # A request to a stalled broker is left to finish in the consumer's thread; while
        # it is out, no other is sent, so a long stall does not pile them up. An answer that
        # comes in a later call is still dated by when its request was sent.
        self._asking: asyncio.Future[Mapping[TP, int]] | None = None
        self._asked_at = 0
        self._asked_for: list[TP] = []

    def held(self) -> list[TP]:
        """The input and internal partitions the worker holds now."""
        topics = set(fetches.receivers_of(self._app))
        consumer = self._app.consumer
        return sorted(tp for tp in consumer.assignment() if tp.topic in topics)

    def positions(self, partitions: list[TP]) -> dict[TP, int | None]:
        """Where the consumer reads each partition next (past transaction markers and aborted
        records), None where it does not know; read from aiokafka's state in place, as
        Faust offers only a call that waits until a position is known."""
        client = getattr(self._app.consumer._thread, "_consumer", None)
        subscription = client._subscription.subscription if client is not None else None
        assignment = subscription.assignment if subscription is not None else None
        found: dict[TP, int | None] = {}
        for tp in partitions:
            state = assignment.state_value(tp) if assignment is not None else None
            known = state is not None and state.has_valid_position
            found[tp] = state.position if state is not None and known else None
        return found

    async def ask(self, partitions: list[TP]) -> Ends | None:
        """Their end offsets, or None when the broker did not answer in time."""
        if not partitions:
            return Ends(now_ms(), {})
        if self._asking is None:
            self._asked_at, self._asked_for = now_ms(), partitions
            self._asking = asyncio.ensure_future(self._app.consumer.highwaters(*partitions))
        asking = self._asking
        done, _ = await asyncio.wait({asking}, timeout=self._timeout_s)
        if not done:
            return None
        self._asking = None
        if asking.exception() is not None:  # e.g. the group is rebalancing
            log.debug("end offsets not known now (%s)", type(asking.exception()).__name__)
            return None
        if self._asked_for != partitions:
            return None  # asked before a rebalance: of other partitions than those held now
        return Ends(self._asked_at, asking.result())


class LagMonitor:
    """Refreshes ``cdp_consumer_lag_messages`` from the broker's end offsets."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self._app = app
        self._end_offsets = EndOffsets(app, timeout_s)

    async def refresh(self) -> None:
        consumer = self._app.consumer
        ends = await self._end_offsets.ask(self._end_offsets.held())
        if ends is None:
            return
        # The assignment may have changed while the broker answered.
        held = set(self._end_offsets.held())
        found = lags(
            {tp: end for tp, end in ends.offsets.items() if tp in held},
            {tp: consumer._read_offset.get(tp) for tp in held},
        )
        CONSUMER_LAG.clear()
        for tp, lag in found.items():
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)


def install(app: Any, interval_s: float, timeout_s: float) -> LagMonitor:
    monitor = LagMonitor(app, timeout_s)
    app.timer(interval=interval_s)(monitor.refresh)
    return monitor
