"""Profile shell: time-based segments re-evaluated and due journey steps run when their time
comes, not at an event.

The profile shell keeps each written profile's recheck time in a
:class:`~streams.runtime.recheck_schedule.RecheckSchedule`; a partition newly assigned to this
worker is read for them in the background, a slice at a time. Every
``CDP_RECHECK_INTERVAL_SECONDS`` the due ones go through the profile step as
:class:`~streams.steps.profile.Recheck` messages, in the stage's open batch
(:meth:`~streams.runtime.stages.BatchedStage.run_unfetched`), so their outputs and table writes
take the path an event's take. A crash before a recheck's profile is written leaves the
stored recheck time as it was: the next worker to hold the partition reads it and runs the
recheck again, with the same outputs (:func:`streams.steps.process.recheck`).

A profile's time comes only once the worker has applied its inputs up to that time
(:mod:`streams.runtime.applied_inputs`): after a restart, an order produced before a
reminder's due time stops the reminder even though it is read after that time.

A profile's time is its :attr:`~streams.profiles.model.Profile.wake_at`: the earlier of its
segment recheck and its next due journey step, so journey waits are durable timers kept in
the profile table (and its changelog) of their partition, whoever holds it next.

The same scan finds the profiles stored under other segment definitions, which the timer
evaluates under the current ones at a limited rate (:mod:`streams.runtime.backfill`).

Retention takes the same path: each profile's expiry
(:func:`~streams.profiles.retention.expires_at`, from its latest event time) is kept in a
second schedule, and a due one goes through the profile step as an
:class:`~streams.steps.profile.Expire` message, which erases the profile if it is still due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faust.types import TP

from streams.events import now_ms
from streams.profiles.model import stored_dict, stored_wake
from streams.profiles.retention import stored_expires_at
from streams.runtime.applied_inputs import AppliedInputs, InvisibleTails
from streams.runtime.backfill import BackfillQueue
from streams.runtime.lag import EndOffsets
from streams.runtime.metrics import (
    BACKFILL_PENDING,
    JOURNEY_TIMERS_PENDING,
    PROFILE_EXPIRIES_SCHEDULED,
    SEGMENT_RECHECK_PARTITIONS_UNREAD,
    SEGMENT_RECHECK_SCAN_SECONDS,
    SEGMENT_RECHECKS_SCHEDULED,
    TIMER_LATENESS_SECONDS,
)
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.runtime.stages import SLICE_SECONDS, BatchedStage
from streams.steps.messages import Out, Send
from streams.steps.profile import Backfill, Expire, Recheck

if TYPE_CHECKING:
    from streams.runtime.context import Runtime

log = logging.getLogger(__name__)

RunInPlace = Callable[[Send, dict[str, bytes], int], None]
HeldPartitions = Callable[[Out], frozenset[int]]


class RecheckTimer:
    def __init__(
        self,
        runtime: Runtime,
        schedule: RecheckSchedule,
        stage: BatchedStage,
        run_in_place: RunInPlace,
        held_partitions: HeldPartitions,
        journey_timers: RecheckSchedule | None = None,
        expiries: RecheckSchedule | None = None,
    ) -> None:
        self._runtime = runtime
        self._schedule = schedule
        self._expiries = RecheckSchedule() if expiries is None else expiries
        self._stage = stage
        self._run_in_place = run_in_place
        self._held_partitions = held_partitions
        # Counted only (the profile's wake time in `schedule` runs them).
        self._journey_timers = RecheckSchedule() if journey_timers is None else journey_timers
        self._generation: int | None = None
        self._held: frozenset[int] = frozenset()
        self._scanned: set[int] = set()
        """Held partitions whose table was read to the end since they were assigned."""
        self._scans: set[asyncio.Task[None]] = set()
        self._backfill = BackfillQueue()
        self._applied = AppliedInputs[TP]()
        self._tails = InvisibleTails[TP]()
        self._end_offsets = EndOffsets(
            runtime.app, timeout_s=runtime.settings.broker_probe_timeout_seconds
        )

    async def run(self) -> None:
        """Run due rechecks and expiries for as long as the worker runs (every profile may
        expire, so this runs whatever the segments and journeys)."""
        interval = self._runtime.settings.recheck_interval_seconds
        while True:
            await asyncio.sleep(interval)
            if not self._settled():
                continue
            self._follow_assignment()
            # Expiries wait for the input too: an event read late may keep a profile.
            until = await self._inputs_applied_until()
            # A batch at a time: a mass of profiles due at once (retention switched on over
            # a large store) must not become one batch held in memory until it is written.
            # A prompt run after a rebalance is offered back: due again in the next round.
            while self._settled() and self._generation == self._runtime.app.consumer_generation_id:
                work = self._due(until, self._runtime.settings.batch_max_messages)
                if not work:
                    break
                await self._stage.run_unfetched(work)
            SEGMENT_RECHECKS_SCHEDULED.set(len(self._schedule))
            PROFILE_EXPIRIES_SCHEDULED.set(len(self._expiries))
            JOURNEY_TIMERS_PENDING.set(len(self._journey_timers))
            SEGMENT_RECHECK_PARTITIONS_UNREAD.set(len(self._held - self._scanned))

    def _due(self, now: int, limit: int) -> list[Callable[[], None]]:
        """Up to ``limit`` due rechecks, then expiries, as work for the stage."""
        rechecks = self._schedule.pop_due(now, limit)
        expiries = self._expiries.pop_due(now, limit - len(rechecks))
        return [
            *(self._prompt(self._schedule, p, key, at, Recheck(at)) for p, key, at in rechecks),
            *(self._prompt(self._expiries, p, key, at, Expire()) for p, key, at in expiries),
        ]

    def _settled(self) -> bool:
        """Whether the partitions held are stable and their tables recovered."""
        app = self._runtime.app
        return (
            app.flow_control.is_active()
            and not app.rebalancing
            and app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        )

    async def _inputs_applied_until(self) -> int:
        """The instant up to which every input partition held is applied (see
        :mod:`streams.runtime.applied_inputs`); one snapshot of their ends is asked at a time."""
        now = now_ms()
        held = self._end_offsets.held()
        consumer: Any = self._runtime.app.consumer  # Faust's own record of its commits
        committed = consumer._committed_offset
        finished = self._stage.applied_offsets
        applied = {
            # A committed offset is the next one to read: the one before it is applied.
            tp: max(finished.get(tp, -1), (committed.get(tp) or 0) - 1)
            for tp in held
        }
        if self._runtime.sender.transactional:
            read = {tp: consumer._read_offset.get(tp) for tp in held}
            applied = self._tails.applied(applied, read, self._end_offsets.positions(held))
        until = self._applied.update(now, applied)
        if self._applied.wants_snapshot():
            ends = await self._end_offsets.ask(held)
            if ends is not None:
                self._applied.snapshot(ends.asked_at, ends.offsets)
        return until

    def _follow_assignment(self) -> None:
        app = self._runtime.app
        if self._generation == app.consumer_generation_id:
            return
        self._generation = app.consumer_generation_id
        self._applied.reset()
        self._tails = InvisibleTails[TP]()
        self._held = self._held_partitions(Out.PROFILE)
        self._schedule.keep(self._held)
        self._journey_timers.keep(self._held)
        self._backfill.keep(self._held)
        self._expiries.keep(self._held)
        self._scanned &= self._held
        # Scans of an earlier generation stopped where they were; these start over.
        for partition in sorted(self._held - self._scanned):
            scan = asyncio.ensure_future(self._scan(partition, self._generation))
            self._scans.add(scan)
            scan.add_done_callback(self._scan_done)

    def _scan_done(self, scan: asyncio.Task[None]) -> None:
        self._scans.discard(scan)
        if not scan.cancelled() and scan.exception() is not None:
            # Its profiles are rechecked from their next change on; the next assignment
            # reads the partition again.
            log.error("reading a partition's recheck times failed", exc_info=scan.exception())

    def _prompt(
        self,
        schedule: RecheckSchedule,
        partition: int,
        key: str,
        at: int,
        message: Recheck | Expire,
    ) -> Callable[[], None]:
        generation = self._generation

        def run() -> None:
            if not self._settled() or self._runtime.app.consumer_generation_id != generation:
                # A rebalance since it came due: due again at the next round if this worker
                # still holds the partition (forgotten with it if not).
                schedule.offer(partition, key, at)
                return
            TIMER_LATENESS_SECONDS.observe(max(0, now_ms() - at) / 1000)
            try:
                self._run_in_place(Send(Out.PROFILE, key, message), {}, partition)
            except Exception:
                # The stored profile is unchanged; it is looked at again at its next change.
                log.exception("a profile's timer failed in partition %s", partition)

        return run

    async def run_backfill(self) -> None:
        """Evaluate the profiles the scans found stored under other segment definitions, at
        most ``CDP_BACKFILL_RATE`` a second, for as long as the worker runs."""
        rate = self._runtime.settings.backfill_rate
        if rate <= 0:
            return
        budget = 0.0
        while True:
            await asyncio.sleep(1.0)
            BACKFILL_PENDING.set(len(self._backfill))
            if not self._settled() or self._generation != self._runtime.app.consumer_generation_id:
                continue
            budget = min(budget + rate, max(rate, 1.0))  # no burst beyond a second's worth
            taken = self._backfill.take(int(budget))
            budget -= len(taken)
            if taken:
                await self._stage.run_unfetched([self._evaluate(p, key) for p, key in taken])

    def _evaluate(self, partition: int, key: str) -> Callable[[], None]:
        generation = self._generation

        def run() -> None:
            if not self._settled() or self._runtime.app.consumer_generation_id != generation:
                # Read again by the scan of the next assignment if still held.
                return
            try:
                self._run_in_place(Send(Out.PROFILE, key, Backfill()), {}, partition)
            except Exception:
                # The stored profile is unchanged; it is evaluated at its next change.
                log.exception("a background evaluation failed in partition %s", partition)

        return run

    async def _scan(self, partition: int, generation: int) -> None:
        """Read a newly held partition's recheck times, a slice of the loop's time at a time.

        No iterator outlives a slice: a rebalance between two slices may close the database.
        """
        app = self._runtime.app
        rules = self._runtime.rules
        retention = rules.retention
        last: bytes | None = None
        while app.consumer_generation_id == generation:
            if not self._settled():
                await asyncio.sleep(self._runtime.settings.recheck_interval_seconds)
                continue
            began = time.perf_counter()
            # The RocksDB store's own partition databases (Faust's store types do not name them).
            store: Any = self._runtime.profiles.data
            # Faust keeps the partition's changelog offset in the same database.
            entries = store._db_for_partition(partition).iter()
            if last is None:
                entries.seek_to_first()
            else:
                entries.seek(last)
                if entries.valid() and entries.key() == last:
                    entries.next()
            while entries.valid() and time.perf_counter() - began < SLICE_SECONDS:
                last = entries.key()
                if last != store.offset_key:
                    key = last.decode()
                    raw = stored_dict(entries.value())
                    wake = stored_wake(raw)
                    self._schedule.offer(partition, key, wake.wake_at)
                    self._journey_timers.offer(partition, key, wake.journey_due_at)
                    self._expiries.offer(partition, key, stored_expires_at(raw, retention))
                    if rules.outdated(wake.segment_rules):
                        self._backfill.offer(partition, key)
                entries.next()
            finished = not entries.valid()
            del entries
            SEGMENT_RECHECK_SCAN_SECONDS.inc(time.perf_counter() - began)
            if finished:
                self._scanned.add(partition)
                return
            await asyncio.sleep(0)
