"""Which stage takes which topic's fetched messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP, AppT, Message

from streams.runtime.faust_patches import fetches


class App:
    """Stands for the Faust app the receivers are kept on."""


async def stage_one(messages: list[Message]) -> None:
    return None


async def stage_two(messages: list[Message]) -> None:
    return None


def test_each_topic_goes_to_the_one_stage_that_claimed_it() -> None:
    app = cast(AppT, App())
    fetches.claim(app, ["a", "b"], stage_one)
    fetches.claim(app, ["c"], stage_two)
    fetches.claim(app, ["a"], stage_one)  # claiming again changes nothing
    assert fetches.receivers_of(app) == {"a": stage_one, "b": stage_one, "c": stage_two}
    with pytest.raises(ValueError, match="claimed by another stage"):
        fetches.claim(app, ["b"], stage_two)


@dataclass
class Fetched:
    """Stands for a fetched message: the stages' routing reads only its topic."""

    topic: str
    offset: int


def test_a_stage_gets_all_of_one_fetch_in_one_call() -> None:
    calls: list[tuple[str, list[Any]]] = []

    def recording(name: str) -> fetches.Receiver:
        async def receive(messages: list[Message]) -> None:
            calls.append((name, list(messages)))

        return receive

    one, two = recording("one"), recording("two")
    fetched = fetches.FetchedForStages({"a": one, "b": one, "c": two})
    messages = [Fetched("a", 0), Fetched("c", 0), Fetched("b", 0), Fetched("x", 0), Fetched("a", 1)]
    taken = [fetched.take(cast(Message, message)) for message in messages]
    assert taken == [True, True, True, False, True]
    asyncio.run(fetched.deliver())
    assert calls == [("one", [messages[0], messages[2], messages[4]]), ("two", [messages[1]])]
    asyncio.run(fetched.deliver())  # delivered once
    assert len(calls) == 2


def test_the_fetcher_loop_is_replaced_once() -> None:
    fetches.deliver_fetches_to_stages()
    replaced: Any = Consumer._drain_messages
    fetches.deliver_fetches_to_stages()
    assert Consumer._drain_messages is replaced
    assert getattr(replaced, "delivers_to_stages", False)


class Fetcher:
    """Stands for Faust's consumer: ``getmany`` hands out, at most ``most`` at a time, the
    buffered messages of the partitions ``_get_active_partitions`` names, as Faust's does."""

    def __init__(self, buffered: dict[TP, list[int]], most: int) -> None:
        self.buffered = buffered
        self.most = most
        self.waits: list[float] = []

    def _get_active_partitions(self) -> set[TP]:
        return set(self.buffered)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109 (Faust's signature)
        self.waits.append(timeout)
        left = self.most
        for tp in sorted(self._get_active_partitions()):
            offsets = self.buffered[tp]
            while offsets and left:
                left -= 1
                yield tp, Fetched(tp.topic, offsets.pop(0))


def fetch(fetcher: Fetcher, first: set[str]) -> list[tuple[str, int]]:
    async def collect() -> list[tuple[str, int]]:
        consumer = cast(Consumer, fetcher)
        return [(m.topic, m.offset) async for _, m in fetches._fetch(consumer, first)]

    return asyncio.run(collect())


def test_a_round_takes_all_the_first_topics_hold_then_one_bounded_fetch_of_every_topic() -> None:
    hop, request, page = TP("hop", 0), TP("requests", 0), TP("pages", 0)
    fetcher = Fetcher({page: [0, 1, 2, 3], hop: [0, 1, 2], request: [0]}, most=2)
    taken = fetch(fetcher, {"hop", "requests"})
    assert taken[:4] == [("hop", 0), ("hop", 1), ("hop", 2), ("requests", 0)]
    # The fetch of every partition, after them, is bounded and does not wait.
    assert taken[4:] == [("pages", 0), ("pages", 1)]
    assert fetcher.waits == [0, 0, 0, 0]
    # Nothing first to take: one fetch of every partition, waiting for data.
    fetcher.waits.clear()
    assert fetch(fetcher, {"hop", "requests"}) == [("pages", 2), ("pages", 3)]
    assert fetcher.waits == [0, 1.0]
    assert fetcher._get_active_partitions() == {hop, request, page}  # as before the round
