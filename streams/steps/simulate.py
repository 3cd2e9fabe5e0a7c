"""Journeys on a virtual clock: what ``cdp journeys simulate`` prints, without Kafka.

Events are applied in time order by :func:`~streams.steps.process.process` with the clock
at each event's time, and every profile's wake time (segment rechecks, due journey steps)
comes in between, through :func:`~streams.steps.process.recheck`: the steps the worker
runs, on the clock the events give. One profile per strongest identifier (identities are
not merged here).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.events import Event
from streams.identity.resolver import routing_key
from streams.profiles.model import Profile
from streams.steps.process import Outcome, Rules, process, recheck


@dataclass(frozen=True, slots=True)
class Line:
    """One output at one instant: a send (``journey_trigger``) or a journey event."""

    at: int
    profile_id: str
    kind: str  # "send" | "journey_event" | "segment_change"
    record: dict[str, Any]


@dataclass
class Simulation:
    rules: Rules
    profiles: dict[str, Profile] = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    """Every outcome in order, with the profile it left (for checks of what was true)."""
    clock: int = 0
    _wakes: list[tuple[int, str]] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        """Run everything due before ``event``, then ``event`` at its time."""
        at = max(event.occurred_at, self.clock)
        self.run_until(at)
        key = routing_key(event)
        self._record(process(self.profiles.get(key), key, event, self.rules, at), key)

    def run_until(self, until: int) -> None:
        """Every wake time up to ``until``, in time order (a step may schedule another)."""
        while self._wakes and self._wakes[0][0] <= until:
            at, key = heapq.heappop(self._wakes)
            profile = self.profiles[key]
            if profile.wake_at != at:
                continue  # superseded
            self.clock = max(self.clock, at)
            self._record(recheck(profile, at, self.rules), key)
        self.clock = max(self.clock, until)

    def _record(self, outcome: Outcome, key: str) -> None:
        if outcome.duplicate:
            return
        self.outcomes.append(outcome)
        profile = outcome.profile
        self.profiles[key] = profile
        pid = profile.profile_id
        self.lines += [
            Line(c.occurred_at, pid, "segment_change", c.to_record())
            for c in outcome.segment_changes
        ]
        self.lines += [
            Line(e.occurred_at, pid, "journey_event", e.to_record()) for e in outcome.journey_events
        ]
        self.lines += [Line(t.occurred_at, pid, "send", t.to_record()) for t in outcome.triggers]
        if profile.wake_at is not None:
            heapq.heappush(self._wakes, (profile.wake_at, key))

    @property
    def sends(self) -> list[dict[str, Any]]:
        return [line.record for line in self.lines if line.kind == "send"]

    @property
    def journey_events(self) -> list[dict[str, Any]]:
        return [line.record for line in self.lines if line.kind == "journey_event"]


def simulate(rules: Rules, events: Iterable[Event], until: int | None = None) -> Simulation:
    """``events`` in time order, then every step due by ``until`` (default: none after the
    last event)."""
    simulation = Simulation(rules)
    ordered = sorted(events, key=lambda e: e.occurred_at)
    for event in ordered:
        simulation.apply(event)
    if until is not None:
        simulation.run_until(until)
    return simulation
