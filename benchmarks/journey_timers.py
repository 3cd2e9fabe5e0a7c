"""Pending journey timers in a worker: what they cost at rest, how fast they fire, how late.

    python -m benchmarks.journey_timers [--timers 1000000] [--due 50000] [--spread 0] [--rate 0]
        [--workers 1]

``--timers`` subscribers waiting for the abandoned-cart reminder (the shipped journeys; the
profile :func:`benchmarks.journeys.waiting_profile` makes, in a time zone where it is midday
when the reminder is due, so quiet hours hold none back) are written straight into a fresh
deployment's profile and identity changelogs. ``--due`` of them fall due from a moment after
the worker will be ready (``--lead`` seconds after writing began; default: an estimate from
the count), spread evenly over ``--spread`` seconds (0: all at once); the others a day later.
``--workers`` workers (one by default) on the embedded broker restore them and read their due
times from their partitions. Measured:

- at rest, once every timer is scheduled: the workers' RSS and their RocksDB directories;
- firing: from the first due time until ``cdp_journey_triggers_total`` counts every reminder
  due, the due steps per second of wall time and per second of the workers' CPU;
- lateness: ``cdp_timer_lateness_seconds`` over the firing (due time to run), p50 and p99,
  while the demo's shopper load flows at ``--rate`` events/s from the first due time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.fleet import Deployment, cpu_seconds, rss_bytes
from benchmarks.journeys import waiting_profile
from benchmarks.measure import produce, shopper_events
from benchmarks.suite import machine, write_tables
from streams.events import IdentifierKind, identifier_key, now_ms
from streams.identity.resolver import Owner, profile_id_for
from streams.runtime.broker import free_port, start_broker
from streams.runtime.topics import ensure_topics
from streams.steps.process import Rules

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
JOURNEY = "abandoned_cart"
TEMPLATE = 0
"""The ``n`` of the template profile, whose ids and address are replaced per timer."""


def midday_zone(at_ms: int) -> str:
    """A fixed-offset time zone in which it is about noon at ``at_ms``."""
    hour = datetime.fromtimestamp(at_ms / 1000, UTC).hour
    offset = (12 - hour + 12) % 24 - 12  # -12..+11 hours from UTC
    # POSIX style: Etc/GMT-2 is two hours ahead of UTC.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def waiting(
    count: int, due_count: int, partitions: int, first_due: int, spread_ms: int
) -> Iterator[tuple[tuple[bytes, bytes], tuple[bytes, bytes]]]:
    """Per subscriber: the profile table record and the identity table record; the first
    ``due_count`` due from ``first_due`` over ``spread_ms``, the others a day later."""
    rules = Rules.load()
    templates: dict[int, tuple[str, str, bytes]] = {}
    for n in range(count):
        due = first_due + (spread_ms * n // due_count if n < due_count else DAY_MS)
        # One template per due second: its times are the reminder's wait before ``due``.
        second = due // 1000 * 1000
        if second not in templates:
            traits = {"timezone": midday_zone(second)}
            profile = waiting_profile(rules, TEMPLATE, second - HOUR_MS, traits)
            templates[second] = (profile.profile_id, profile.email or "", profile.to_json())
        template_id, template_email, value = templates[second]
        email = f"timer-{n:09d}@example.com"
        key = identifier_key(IdentifierKind.EMAIL, email)
        profile_id = profile_id_for(key, partitions)
        stored = value.replace(template_id.encode(), profile_id.encode())
        stored = stored.replace(template_email.encode(), email.encode())
        owner = Owner(profile_id, IdentifierKind.EMAIL).encode()
        yield (profile_id.encode(), stored), (key.encode(), owner)


def reminders(deployment: Deployment) -> float:
    """Abandoned-cart reminders the workers sent (the load's journeys send others)."""
    return deployment.metric("cdp_journey_triggers_total", journey=JOURNEY)


def run(
    count: int,
    due_count: int,
    partitions: int,
    spread_s: float,
    rate: float,
    lead_s: float,
    workers: int,
    root: Path,
) -> dict[str, Any]:
    broker = start_broker(free_port(), log_file=root / "broker.log")
    deployment = Deployment(broker.bootstrap, root / "d", partitions)
    try:
        ensure_topics(broker.bootstrap, deployment.settings)
        began = time.monotonic()
        first_due = now_ms() + int(lead_s * 1000)
        spread_ms = int(spread_s * 1000)
        write_tables(deployment, list(waiting(count, due_count, partitions, first_due, spread_ms)))
        written_s = time.monotonic() - began
        started = time.monotonic()
        deployment.start(workers, timeout=1800)
        ready_s = time.monotonic() - started
        pids = [worker.process.pid for worker in deployment.workers if worker.process]
        # A lead too short leaves the first due ones firing (their timers gone) before the rest
        # are scheduled: seconds_before_first_due is negative then, the firing counts from now.
        while deployment.metric("cdp_journey_timers_pending") < count - reminders(deployment):
            if time.monotonic() - began > 3600:
                raise TimeoutError("the timers were not all scheduled within an hour")
            time.sleep(0.5)
        at_rest = {
            "scheduled_after_s": time.monotonic() - began,
            "rss_bytes": sum(worker.rss() for worker in deployment.workers),
            "state_bytes": sum(worker.state_bytes() for worker in deployment.workers),
            "seconds_before_first_due": (first_due - now_ms()) / 1000,
        }
        lateness_before = deployment.histogram("cdp_timer_lateness_seconds")
        time.sleep(max(0.0, (first_due - now_ms()) / 1000))
        firing_began = time.monotonic()
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        if rate:
            events = shopper_events(int(rate * (spread_s + 5)), 20_000, 1)
            args = (broker.bootstrap, deployment.settings, events, rate)
            threading.Thread(target=produce, args=args, daemon=True).start()
        while (fired := reminders(deployment)) < due_count:
            if time.monotonic() - firing_began > 1800:
                raise TimeoutError(f"only {fired:.0f} of {due_count} reminders sent")
            time.sleep(0.5)
        firing_s = time.monotonic() - firing_began
        firing_cpu_s = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        lateness = deployment.histogram("cdp_timer_lateness_seconds").since(lateness_before, 60)
        return {
            "timers": count,
            "partitions": partitions,
            "workers": workers,
            "spread_s": spread_s,
            "load_rate": rate,
            "written_s": written_s,
            "ready_s": ready_s,
            "at_rest": at_rest,
            "firing": {
                "seconds": firing_s,
                "due_steps": due_count,
                "due_steps_per_s": due_count / firing_s,
                "worker_cpu_s": firing_cpu_s,
                "due_steps_per_worker_cpu_s": due_count / firing_cpu_s,
                "lateness": lateness,
            },
            "rss_bytes_peak": sum(rss_bytes(pid, "VmHWM") for pid in pids),
        }
    finally:
        deployment.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=50_000, help="how many of them fall due")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--spread", type=float, default=0.0, help="seconds the due times span")
    parser.add_argument("--rate", type=float, default=0.0, help="load events/s while firing")
    parser.add_argument(
        "--lead", type=float, default=None, help="seconds from writing to the first due time"
    )
    args = parser.parse_args()
    # Writing, restoring and scheduling take about 0.5 ms a timer on the development host.
    lead = args.lead if args.lead is not None else 60 + args.timers * 0.0006
    with tempfile.TemporaryDirectory() as root:
        due = min(args.due, args.timers)
        result = run(
            args.timers,
            due,
            args.partitions,
            args.spread,
            args.rate,
            lead,
            args.workers,
            Path(root),
        )
    print(json.dumps({"machine": machine(), "journey_timers": result}, indent=2))


if __name__ == "__main__":
    main()
