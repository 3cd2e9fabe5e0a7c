"""Up to which instant everything the worker reads has been applied, so a due step never
runs ahead of the input that should have stopped it.

A journey step or segment recheck due at ``T`` must see every event produced before ``T``:
an order placed before a cart reminder's due time must stop the reminder even when the
worker was down at ``T`` and reads that order only after its restart. The worker takes, once
a round, a snapshot of the end offsets of the input partitions it holds (the input topics and
its internal ones) and notes when it has applied each partition up to that end. An event
produced before ``T`` then reaches its profile in at most two hops (input topic, then the
internal profile topic when its profile lives in another partition), hence:

    everything produced before a snapshot taken at ``t1`` is applied once that snapshot is
    reached (at ``r1``) and a later one, taken at or after ``r1``, is reached too.

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


class AppliedInputs(Generic[Partition]):
    """The instant up to which all input held is applied (see the module).

    One snapshot is out at a time, taken after the one before was reached: each is the second
    hop of the one before, and a worker far behind keeps two, not one a round.
    """

    def __init__(self) -> None:
        self._reached: _Snapshot[Partition] | None = None
        self._pending: _Snapshot[Partition] | None = None
        self._applied_until = 0

    def reset(self) -> None:
        """The partitions held changed: nothing is known to be applied until new snapshots
        of them are reached."""
        self._reached = self._pending = None
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
            first = self._reached
            if first is not None and pending.taken_at >= first.reached_at:
                self._applied_until = max(self._applied_until, first.taken_at)
            self._reached, self._pending = pending, None
        return self._applied_until
