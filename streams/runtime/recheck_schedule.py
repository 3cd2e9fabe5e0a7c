"""When each profile's time-based segments are due again, partition by partition.

A profile records the next instant its time-based segments may flip
(``Profile.segment_recheck_at``, see :mod:`streams.segments.clock`). The worker keeps those
instants here, as it writes profiles and by scanning a partition's table when it is
assigned, and re-evaluates each profile once its instant has come, so a segment such as
``cart_abandoner`` is entered without another event of the shopper. Pure: no clock of its
own, no Kafka.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection


class RecheckSchedule:
    """Profiles' recheck instants by partition, earliest first.

    The latest instant set for a profile is the one that counts; earlier ones left in the
    heap are skipped when they come up. A due recheck is only a prompt: the profile step
    evaluates a profile only if the instant is still the stored profile's own, so a stale
    one costs a read and nothing else.
    """

    def __init__(self) -> None:
        self._at: dict[int, dict[str, int]] = {}
        self._heap: dict[int, list[tuple[int, str]]] = {}

    def set(self, partition: int, profile_id: str, at: int | None) -> None:
        """The profile's recheck instant as just written; ``None``: it has none."""
        current = self._at.setdefault(partition, {})
        if at is None:
            current.pop(profile_id, None)
        elif current.get(profile_id) != at:
            current[profile_id] = at
            self._push(partition, at, profile_id)

    def offer(self, partition: int, profile_id: str, at: int | None) -> None:
        """The profile's recheck instant as a scan of the partition's table read it.

        Taken only when the stage has set none for the profile: the table may hold an older
        value than the one just set. A value the stage cleared since comes back, as a stale
        prompt at worst.
        """
        current = self._at.setdefault(partition, {})
        if at is not None and profile_id not in current:
            current[profile_id] = at
            self._push(partition, at, profile_id)

    def keep(self, partitions: Collection[int]) -> None:
        """Forget every partition but ``partitions`` (those still held)."""
        for partition in [p for p in self._at if p not in partitions]:
            del self._at[partition]
            self._heap.pop(partition, None)

    def pop_due(self, now_ms: int, limit: int | None = None) -> list[tuple[int, str, int]]:
        """``(partition, profile id, instant)`` of every recheck due at ``now_ms`` (at most
        ``limit``), earliest first in each partition; they are due no more."""
        due: list[tuple[int, str, int]] = []
        for partition, heap in self._heap.items():
            current = self._at[partition]
            while heap and heap[0][0] <= now_ms and (limit is None or len(due) < limit):
                at, profile_id = heapq.heappop(heap)
                if current.get(profile_id) == at:
                    del current[profile_id]
                    due.append((partition, profile_id, at))
        return due

    def __len__(self) -> int:
        """How many profiles have a recheck to come (so an empty schedule is falsy: pass
        one on with ``is None`` checks, never ``or``)."""
        return sum(len(current) for current in self._at.values())

    def _push(self, partition: int, at: int, profile_id: str) -> None:
        heap = self._heap.setdefault(partition, [])
        heapq.heappush(heap, (at, profile_id))
        # Superseded instants stay in the heap until they come up; rebuild it before they
        # outnumber the live ones.
        current = self._at[partition]
        if len(heap) > 2 * len(current) + 64:
            rebuilt = [(when, pid) for pid, when in current.items()]
            heapq.heapify(rebuilt)
            self._heap[partition] = rebuilt
