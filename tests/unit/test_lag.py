"""Consumer lag from end offsets and Faust's read offsets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from streams.events import now_ms
from streams.runtime.lag import EndOffsets, lags, partition_lag


def test_lag_is_what_lies_after_the_last_message_read() -> None:
    # Offsets 0..9 appended (end offset 10), 0..6 read: 7, 8 and 9 are unread.
    assert partition_lag(10, 6) == 3
    assert partition_lag(10, 9) == 0


def test_right_after_a_seek_to_the_committed_offset_the_lag_is_not_over_counted() -> None:
    # Faust keeps the committed offset (the next to read) after a seek: nothing unread.
    assert partition_lag(10, 10) == 0


def test_a_partition_never_read_nor_committed_lags_by_all_it_holds() -> None:
    assert partition_lag(25, None) == 25


def test_an_unknown_end_offset_gives_no_lag() -> None:
    assert partition_lag(None, 3) is None


def test_lags_of_several_partitions() -> None:
    a, b, c = TP("cdp.orders", 0), TP("cdp.orders", 1), TP("cdp.page-views", 3)
    found = lags({a: 100, b: None, c: 7}, {a: 49, c: None})
    assert found == {a: 50, c: 7}


class SlowBroker:
    """Stands for the worker's consumer: each end-offsets request answers when released."""

    def __init__(self) -> None:
        self.asked: list[tuple[TP, ...]] = []
        self.release = asyncio.Event()

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        self.asked.append(partitions)
        await self.release.wait()
        return {tp: 10 for tp in partitions}


def test_an_answer_that_comes_late_is_dated_by_when_it_was_asked() -> None:
    broker = SlowBroker()
    ends = EndOffsets(SimpleNamespace(consumer=broker), timeout_s=0.01)
    held = [TP("pages", 0)]

    async def scenario() -> None:
        before = now_ms()
        assert await ends.ask(held) is None  # timed out: the request stays out
        await asyncio.sleep(0.05)
        broker.release.set()
        answer = await ends.ask(held)
        assert answer is not None
        assert answer.offsets == {TP("pages", 0): 10}
        assert before <= answer.asked_at < before + 40  # not the second call's time
        assert len(broker.asked) == 1

    asyncio.run(scenario())


def test_an_answer_for_partitions_no_longer_held_is_dropped() -> None:
    broker = SlowBroker()
    ends = EndOffsets(SimpleNamespace(consumer=broker), timeout_s=0.01)

    async def scenario() -> None:
        assert await ends.ask([TP("pages", 0)]) is None
        broker.release.set()
        assert await ends.ask([TP("pages", 1)]) is None  # a rebalance came in between
        answer = await ends.ask([TP("pages", 1)])
        assert answer is not None
        assert answer.offsets == {TP("pages", 1): 10}
        assert broker.asked == [(TP("pages", 0),), (TP("pages", 1),)]

    asyncio.run(scenario())
