"""Journeys' cost: the pure core's event rate with the shipped flows against the one-step
journeys, and what pending timers cost (bytes per waiting profile, the schedule's memory, the
rate at which due steps run).

    python -m benchmarks.journeys [--events 20000] [--timers 1000000] [--due 20000]

In memory, one process, no Kafka: the core's ceiling, not a worker's rate. Due steps run as
the worker runs them: the stored profile decoded, :func:`~streams.steps.process.recheck` at
its wake time, the profile encoded again; every wake within the reminder's second counts (a
time-based segment turning a moment after it is a timer run of its own).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.core import core_ceiling
from benchmarks.suite import FULL
from streams.events import Event, EventKind, Identity
from streams.profiles.model import Profile, dump_stored, load_stored
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.settings import Settings
from streams.steps.process import Rules, process, recheck

ONE_STEP = Path(__file__).parents[1] / "tests" / "unit" / "one_step_journeys.yaml"
T0 = 1_709_546_400_000  # 2024-03-04 10:00 in Amsterdam: outside quiet hours


def event_rate(events: list[Event], journeys: Path | None, rounds: int) -> float:
    """Events per second of CPU time of the in-memory core, the best of ``rounds`` runs (CPU
    time, not wall time: on a shared machine the wall clock measures the neighbours too)."""
    settings = Settings(journeys_file=journeys)
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        core_ceiling(events, settings)
        best = min(best, time.process_time() - began)
    return len(events) / best


def waiting_profile(
    rules: Rules, n: int, at: int = T0, traits: dict[str, str] | None = None
) -> Profile:
    """A subscriber who added to the cart at ``at``: waiting for the abandoned-cart reminder."""
    identity = Identity(email=f"w{n}@example.com")
    signup = Event(
        EventKind.IDENTIFY,
        f"s{n}",
        at - 1,
        identity,
        {
            "traits": {"first_name": "Ann", **(traits or {})},
            "newsletter": "subscribed",
            "consent": {"email_marketing": True},
        },
    )
    cart = Event(
        EventKind.PAGE_VIEW,
        f"c{n}",
        at,
        identity,
        {
            "url": "https://shop/x",
            "path": "/x",
            "title": None,
            "referrer": None,
            "category": "toys",
            "product_id": "pram",
            "action": "add_to_cart",
        },
    )
    pid = f"p_{n:024x}"
    profile = process(None, pid, signup, rules, at - 1).profile
    return process(profile, pid, cart, rules, at).profile


def timers(count: int, due: int) -> dict[str, Any]:
    rules = Rules.load()
    sample = [waiting_profile(rules, n) for n in range(min(due, count))]
    stored = [dump_stored(p) for p in sample]
    book_bytes = [len(json.dumps(p.journey_flows, separators=(",", ":"))) for p in sample]

    # The worker keeps one (partition, profile id, time) entry per waiting profile.
    gc.collect()
    tracemalloc.start()
    schedule = RecheckSchedule()
    for n in range(count):
        schedule.set(n % 8, f"p_{n:024x}", T0 + 3_600_000 + n % 1_000)
    schedule_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    began = time.perf_counter()
    popped = schedule.pop_due(T0 + 10 * 3_600_000)
    pop_s = time.perf_counter() - began
    assert len(popped) == count

    # Due steps as the worker runs them: decode, recheck at the wake time, encode; again for
    # each wake within the reminder's second.
    began = time.process_time()
    sent = runs = 0
    for data in stored:
        profile = load_stored(data)
        assert isinstance(profile, Profile)
        at = profile.wake_at
        assert at is not None
        second_ends = at + 1000
        while True:
            outcome = recheck(profile, at, rules)
            sent += len(outcome.triggers)
            runs += 1
            data = dump_stored(outcome.profile)
            next_at = outcome.profile.wake_at
            if next_at is None or next_at >= second_ends:
                break
            at = next_at
            profile = load_stored(data)
            assert isinstance(profile, Profile)
    run_s = time.process_time() - began
    assert sent == len(stored), sent
    return {
        "pending_timers": count,
        "stored_profile_bytes_mean": statistics.mean(len(s) for s in stored),
        "journey_book_bytes_mean": statistics.mean(book_bytes),
        "schedule_bytes_per_timer": schedule_bytes / count,
        "schedule_pop_due_per_s": count / pop_s,
        "reminders_per_cpu_s": len(stored) / run_s,
        "timer_runs_per_reminder": runs / len(stored),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=FULL.events)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=20_000)
    args = parser.parse_args()
    events = list(FULL.load(args.events, seed=1))
    one_step = event_rate(events, ONE_STEP, args.rounds)
    flows = event_rate(events, None, args.rounds)
    report = {
        "events": args.events,
        "core_events_per_cpu_s_one_step_journeys": round(one_step),
        "core_events_per_cpu_s_shipped_flows": round(flows),
        "flows_vs_one_step": round(flows / one_step, 3),
        **timers(args.timers, args.due),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
