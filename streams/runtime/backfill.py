"""The background evaluation: profiles stored under other segment definitions, evaluated
under the current ones at a limited rate without waiting for their next event.

The recheck timer's scan of each held partition (:mod:`streams.runtime.rechecks`) offers
every profile whose stored ``segment_rules`` differs from the current definitions'; the
timer takes them at ``CDP_BACKFILL_RATE`` per second through the profile step as
:class:`~streams.steps.profile.Backfill` messages (:func:`streams.steps.process.backfill`).
Resumable without a record of its own: an evaluated profile is stored with the current
definitions' fingerprint, so a restarted or newly assigned worker's scan offers only those
still left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class BackfillQueue:
    """Keys of the held partitions still to evaluate, in scan order, each offered once."""

    def __init__(self) -> None:
        self._keys: dict[int, deque[str]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def offer(self, partition: int, key: str) -> None:
        self._keys.setdefault(partition, deque()).append(key)
        self._size += 1

    def keep(self, partitions: Iterable[int]) -> None:
        """Forget the keys of partitions no longer held."""
        held = frozenset(partitions)
        for partition in [p for p in self._keys if p not in held]:
            self._size -= len(self._keys.pop(partition))

    def take(self, most: int) -> list[tuple[int, str]]:
        """Up to ``most`` keys, from every partition in turn."""
        taken: list[tuple[int, str]] = []
        while len(taken) < most and self._size:
            for partition, keys in list(self._keys.items()):
                if len(taken) == most:
                    break
                taken.append((partition, keys.popleft()))
                self._size -= 1
                if not keys:
                    del self._keys[partition]
        return taken
