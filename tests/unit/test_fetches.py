"""Which stage takes which topic's fetched messages."""

from __future__ import annotations

from typing import Any, cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import AppT, Message

from streams import fetches


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


def test_the_fetcher_loop_is_replaced_once() -> None:
    fetches.deliver_fetches_to_stages()
    replaced: Any = Consumer._drain_messages
    fetches.deliver_fetches_to_stages()
    assert Consumer._drain_messages is replaced
    assert getattr(replaced, "delivers_to_stages", False)
