"""Which stage takes which topic's fetched messages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import AppT, Message

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
