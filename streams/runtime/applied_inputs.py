"""Up to which instant everything the worker reads has been applied, so a due step never
runs ahead of the input that should have stopped it.

A journey step or segment recheck due at ``T`` must see every event produced before ``T``:
an order placed before a cart reminder's due time must stop the reminder even when the
worker was down at ``T`` and reads that order only after its restart. The worker takes, once
a round, a snapshot of the end offsets of the input partitions it holds (the input topics and
its internal ones) and notes when it has applied each partition up to that end. An event
reaches its profile in at most three hops: its input topic, the internal identity topic when
its strongest identifier lives in another partition than the one it was produced to (a
producer that keys by something else, or not at all), and the internal profile topic when
its profile lives in yet another (a person merged into a profile another identifier
founded). A message a hop sends is on its topic before the hop's partition counts as
applied, hence:

    everything produced before a snapshot taken at ``t1`` is applied once that snapshot is
    reached (at ``r1``), a second one taken at or after ``r1`` is reached (at ``r2``) and a
    third one taken at or after ``r2`` is reached too.

Pure: the caller brings the clock, the end offsets and how far each partition is applied.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

Partition = TypeVar("Partition", bound=Hashable)


@dataclass
class _Snapshot(Generic[Partition]):
    taken_at: int
    ends: Mapping[Partition, int]
    """Per partition, the offset the next record appended would have had."""
    reached_at: int = 0


# Snapshots reached in a row before the first one's instant counts as applied: one a hop.
HOPS = 3


class AppliedInputs(Generic[Partition]):
    """The instant up to which all input held is applied (see the module).

    One snapshot is out at a time, taken after the one before was reached: each is the next
    hop of the ones before, and a worker far behind keeps ``hops``, not one a round.
    """

    def __init__(self, hops: int = HOPS) -> None:
        self._hops = hops
        self._reached: list[_Snapshot[Partition]] = []
        """The last ``hops`` snapshots reached, oldest first, each taken once the one before
        it was reached."""
        self._pending: _Snapshot[Partition] | None = None
        self._applied_until = 0

    def reset(self) -> None:
        """The partitions held changed: nothing is known to be applied until new snapshots
        of them are reached."""
        self._reached = []
        self._pending = None
        self._applied_until = 0

    def wants_snapshot(self) -> bool:
        return self._pending is None

    def snapshot(self, taken_at: int, ends: Mapping[Partition, int]) -> None:
        """The end offsets of every partition held, as the broker gave them at ``taken_at``."""
        self._pending = _Snapshot(taken_at, dict(ends))

    def update(self, now: int, applied: Mapping[Partition, int]) -> int:
        """The instant up to which input is applied, given the offset of the last record
        applied in each partition (missing: none)."""
        pending = self._pending
        if pending is not None and all(
            applied.get(partition, -1) >= end - 1 for partition, end in pending.ends.items()
        ):
            pending.reached_at = now
            if self._reached and pending.taken_at < self._reached[-1].reached_at:
                self._reached = []  # not a later hop of those: start a new row
            self._reached = [*self._reached, pending][-self._hops :]
            if len(self._reached) == self._hops:
                self._applied_until = max(self._applied_until, self._reached[0].taken_at)
            self._pending = None
        return self._applied_until


class InvisibleTails(Generic[Partition]):
    """Exactly once: how far a partition is applied, counting the offsets after its last
    record that a read_committed reader is never given.

    A transaction's commit marker takes an offset, so a partition written in transactions
    (the internal topics, under exactly_once) ends one past a marker, not a record: its last
    record applied never reaches the end a snapshot asks for, and due steps would wait for
    the next record to arrive there. The consumer's read position moves past markers and
    aborted records. A partition whose records read are all applied is applied up to its
    position, once the position stood there a round before too: the records of a fetch
    are on their way to the stage for a moment after the position moved.
    """

    def __init__(self) -> None:
        self._positions: dict[Partition, int] = {}

    def applied(
        self,
        applied: Mapping[Partition, int],
        read: Mapping[Partition, int | None],
        positions: Mapping[Partition, int | None],
    ) -> dict[Partition, int]:
        """``applied`` with each such partition counted up to the offset before its position;
        ``read``: the offset of the last record read, ``positions``: the next one to read."""
        counted = dict(applied)
        steady: dict[Partition, int] = {}
        for partition, position in positions.items():
            if position is None:
                continue
            done = applied.get(partition, -1)
            last_read = read.get(partition)
            if last_read is not None and last_read > done:
                continue  # read, not applied yet
            if self._positions.get(partition) == position:
                counted[partition] = max(done, position - 1)
            steady[partition] = position
        self._positions = steady
        return counted
