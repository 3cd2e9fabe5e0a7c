"""The fixes to Faust internals that need no Kafka to test: reading partitions again after a
seek, which changelog ends to read, discovery marks."""

from __future__ import annotations

import inspect
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.runtime.faust_patches.changelog_ends import ends_to_read
from streams.runtime.faust_patches.discovery import mark_nothing_for_discovery
from streams.runtime.faust_patches.seeks import Seeks


def test_a_fetch_before_any_seek_is_fresh() -> None:
    seeks = Seeks()
    token = seeks.token()
    assert seeks.fresh("a", token)


def test_a_fetch_that_started_before_a_seek_is_stale_for_that_partition_only() -> None:
    seeks = Seeks()
    token = seeks.token()
    seeks.begin(["a"])
    seeks.end(["a"])
    assert not seeks.fresh("a", token)
    assert seeks.fresh("b", token)


def test_a_fetch_that_started_while_a_seek_was_under_way_is_stale() -> None:
    seeks = Seeks()
    seeks.begin(["a"])
    token = seeks.token()
    seeks.end(["a"])
    assert not seeks.fresh("a", token)


def test_a_fetch_that_started_after_the_seek_ended_is_fresh() -> None:
    seeks = Seeks()
    seeks.begin(["a", "b"])
    seeks.end(["a", "b"])
    token = seeks.token()
    assert seeks.fresh("a", token)
    assert seeks.fresh("b", token)


def test_overlapping_seeks_keep_the_partition_under_way_until_both_end() -> None:
    seeks = Seeks()
    seeks.begin(["a"])
    seeks.begin(["a"])
    seeks.end(["a"])
    assert not seeks.fresh("a", seeks.token())
    seeks.end(["a"])
    assert seeks.fresh("a", seeks.token())


def test_only_partitions_whose_local_state_stops_short_of_the_last_batch_are_read() -> None:
    behind, written, empty, new = (TP("cdp.profiles-changelog", p) for p in range(4))
    reported = {behind: 40, written: 40, empty: -1, new: 12}
    persisted = {behind: 39, written: 44, empty: None, new: None}
    assert ends_to_read(reported, persisted) == {
        ("cdp.profiles-changelog", 0): 40,
        ("cdp.profiles-changelog", 3): 12,
    }
    assert ends_to_read({written: 40}, {written: 40}) == {}


def test_decorators_leave_no_marks_for_a_discovery_that_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark_nothing_for_discovery()

    def source_read(*args: Any) -> Any:
        raise AssertionError("a discovery mark read the caller's source")

    monkeypatch.setattr(inspect, "getframeinfo", source_read)
    app = faust.App("marks", autodiscover=False)

    @app.agent(app.topic("marks"))
    async def agent(stream: Any) -> None:
        async for _ in stream:
            pass

    assert len(app.agents) == 1
