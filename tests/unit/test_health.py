"""Readiness reasons and the event-loop lag watcher, without a worker."""

from __future__ import annotations

import asyncio
import contextlib
import time

from streams.runtime import health
from streams.runtime.metrics import REGISTRY


def lag_sample(name: str) -> float:
    value = REGISTRY.get_sample_value(f"cdp_event_loop_lag_seconds_{name}")
    return value or 0.0


def test_a_blocked_event_loop_shows_as_lag() -> None:
    blocked_s = 0.2

    async def block_while_watched() -> None:
        watcher = asyncio.ensure_future(health.watch_event_loop_lag())
        await asyncio.sleep(0.01)  # the watcher is asleep, due to wake within 50 ms
        time.sleep(blocked_s)  # noqa: ASYNC251 - the point: a callback holding the loop
        await asyncio.sleep(3 * health.LAG_SAMPLE_INTERVAL_S)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    count, total = lag_sample("count"), lag_sample("sum")
    asyncio.run(block_while_watched())
    assert lag_sample("count") - count >= 2
    lagged = lag_sample("sum") - total
    assert blocked_s - health.LAG_SAMPLE_INTERVAL_S <= lagged < blocked_s + 0.1


def test_a_worker_is_ready_only_with_nothing_in_its_way() -> None:
    assert (
        health.not_ready_reasons(
            rebalancing=False, recovered=True, assigned=True, broker_reachable=True
        )
        == []
    )
    assert health.not_ready_reasons(
        rebalancing=True, recovered=False, assigned=False, broker_reachable=False
    ) == ["broker_unreachable", "rebalancing", "recovering_tables", "no_partitions_assigned"]
