"""The background evaluation's queue: every held partition in turn, bounded takes, and the
keys of partitions given up forgotten."""

from __future__ import annotations

from streams.runtime.backfill import BackfillQueue


def test_takes_go_round_the_partitions_and_forget_those_no_longer_held() -> None:
    queue = BackfillQueue()
    for partition, key in [(0, "a"), (0, "b"), (0, "c"), (1, "x"), (2, "y")]:
        queue.offer(partition, key)
    assert len(queue) == 5
    assert queue.take(2) == [(0, "a"), (1, "x")]
    queue.keep([0, 1])
    assert len(queue) == 2
    assert queue.take(10) == [(0, "b"), (0, "c")]
    assert len(queue) == 0
    assert queue.take(1) == []
