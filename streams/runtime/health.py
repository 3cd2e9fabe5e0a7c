"""Readiness: whether a worker can make progress right now, and if not, why.

``/ready`` answers 200 only when the worker is in its group with partitions assigned, has
recovered its tables, and the broker answers. A broker that stops answering (a stalled or
partitioned broker) makes the worker not ready until the broker answers again; the worker
itself keeps running and resumes on its own.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.runtime import lag
from streams.runtime.kafka_clients import client_config
from streams.runtime.metrics import BROKER_REACHABLE, EVENT_LOOP_LAG_SECONDS

if TYPE_CHECKING:
    from streams.runtime.context import Runtime

log = logging.getLogger(__name__)

LAG_SAMPLE_INTERVAL_S = 0.05


def not_ready_reasons(
    *, rebalancing: bool, recovered: bool, assigned: bool, broker_reachable: bool
) -> list[str]:
    reasons = []
    if not broker_reachable:
        reasons.append("broker_unreachable")
    if rebalancing:
        reasons.append("rebalancing")
    if not recovered:
        reasons.append("recovering_tables")
    if not assigned:
        reasons.append("no_partitions_assigned")
    return reasons


class BrokerProbe:
    """Asks the broker for metadata every few seconds; remembers whether it answered."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self._config = client_config(bootstrap)
        self._admin = AdminClient(self._config)
        self._timeout_s = timeout_s
        # Its own thread: the shared executor's may be busy with slow calls to the same
        # stalled broker, and a probe queued behind them says late that it is back.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-probe")
        self.reachable = True

    def _answers(self) -> bool:
        try:
            self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException:
            # A new client next time: one whose connection stalled need not recover with it.
            self._admin = AdminClient(self._config)
            return False
        return True

    async def probe(self) -> None:
        loop = asyncio.get_running_loop()
        reachable = await loop.run_in_executor(self._thread, self._answers)
        if reachable != self.reachable:
            log.warning("the broker %s", "answers again" if reachable else "stopped answering")
        self.reachable = reachable
        BROKER_REACHABLE.set(1 if reachable else 0)


async def watch_event_loop_lag() -> None:
    """Observe, for as long as the worker runs, how late the event loop wakes a sleeper.

    Lookups are served on the loop the stages run on; this is their wait in the queue.
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_SAMPLE_INTERVAL_S
        await asyncio.sleep(LAG_SAMPLE_INTERVAL_S)
        EVENT_LOOP_LAG_SECONDS.observe(max(0.0, loop.time() - due))


def install(runtime: Runtime) -> BrokerProbe:
    settings = runtime.settings
    probe = BrokerProbe(runtime.bootstrap, timeout_s=settings.broker_probe_timeout_seconds)
    runtime.app.timer(interval=settings.broker_probe_interval_seconds)(probe.probe)
    runtime.app.task(watch_event_loop_lag)
    lag.install(
        runtime.app,
        interval_s=settings.broker_probe_interval_seconds,
        timeout_s=settings.broker_probe_timeout_seconds,
    )
    return probe
