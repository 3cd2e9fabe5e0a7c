"""Failures of the surroundings: a stalled broker, workers joining and dying."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker, free_port

from .conftest import Topics, Worker, start_test_broker, wait_until, worker_env
from .test_pipeline import page_view

STALL_S = 30


def test_a_stalled_broker_makes_the_worker_not_ready_and_it_recovers_losing_nothing(
    tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    stalled = start_test_broker(tmp_path / "stalled-broker.log")
    topics: Topics | None = None
    try:
        env = worker_env(
            stalled,
            tmp_path,
            CDP_BROKER_PROBE_INTERVAL_SECONDS="1",
            CDP_BROKER_PROBE_TIMEOUT_SECONDS="2",
        )
        worker = make_worker(env)
        settings = worker.settings
        topics = Topics(stalled.bootstrap, settings, Codec(settings.schemas_dir))
        visitor = f"stall-{uuid.uuid4().hex[:8]}"
        pages = settings.input_topic(EventKind.PAGE_VIEW)

        def views() -> int:
            response = worker.get("/profiles", anonymous_id=visitor)
            return int(response.json()["views"]["count"]) if response.status_code == 200 else 0

        topics.produce(pages, page_view(visitor, "toys"))
        topics.flush()
        wait_until(lambda: views() == 1)

        os.kill(stalled.process.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        try:
            wait_until(lambda: worker.get("/ready").status_code == 503, timeout=15)
            assert "broker_unreachable" in worker.get("/ready").json()["reasons"]
            assert "cdp_broker_reachable 0.0" in worker.get("/metrics").text
            # What the worker holds still answers: lookups do not need the broker.
            assert views() == 1
            # Events produced meanwhile wait in the producer.
            for _ in range(5):
                topics.produce(pages, page_view(visitor, "toys"))
            time.sleep(max(0.0, STALL_S - (time.monotonic() - stalled_at)))
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)
        topics.flush()

        def state() -> str:
            return f"/ready: {worker.get('/ready').text}\n{worker.log_tail(80)}"

        wait_until(lambda: worker.get("/ready").status_code == 200, timeout=60, explain=state)
        wait_until(lambda: views() == 6, timeout=60, explain=state)
        assert worker.process is not None
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        if topics is not None:
            topics.close()
        stalled.stop()


@pytest.mark.faults
def test_workers_joining_and_dying_keep_every_event_exactly_once(
    broker: EmbeddedBroker,
    tmp_path: Path,
    two_workers: tuple[Worker, Worker],
    make_worker: Callable[..., Worker],
) -> None:
    first, second = two_workers
    settings = first.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    visitors = [f"rebalance-{run}-{index}" for index in range(24)]
    pages = settings.input_topic(EventKind.PAGE_VIEW)

    def produce_views(count: int) -> None:
        for visitor in visitors:
            for _ in range(count):
                topics.produce(pages, page_view(visitor, "gifts"))
        topics.flush()

    seen: dict[str, object] = {}

    def all_have(views: int, asked: Worker) -> Callable[[], bool]:
        def check() -> bool:
            for visitor in visitors:
                response = asked.get("/profiles", anonymous_id=visitor)
                ok = response.status_code == 200
                seen[visitor] = response.json()["views"]["count"] if ok else response.status_code
            return all(count == views for count in seen.values())

        return check

    produce_views(3)
    wait_until(all_have(3, first), timeout=30)
    # A worker dies without a goodbye; the survivor takes its partitions over.
    assert second.process is not None
    second.process.kill()
    produce_views(2)
    wait_until(all_have(5, first), timeout=60)
    # A new worker joins and takes a share; both answer every lookup.
    third = make_worker(
        {
            **first.env,
            "CDP_DATA_DIR": str(tmp_path / "three" / "data"),
            "CDP_WEB_PORT": str(free_port()),
        }
    )
    wait_until(lambda: third.get("/ready").status_code == 200, timeout=60)
    produce_views(1)
    try:
        wait_until(all_have(6, first), timeout=60)
        wait_until(all_have(6, third), timeout=30)
    except AssertionError as failure:
        raise AssertionError(f"views (or HTTP status) per visitor: {seen}") from failure
    topics.close()
