"""Retention's cost: one worker sweeping expired anonymous profiles, end to end.

    python -m benchmarks.retention [--profiles 1000000] [--partitions 8]

``--profiles`` anonymous profiles (three page views each, stored as the worker stores them)
and their identifiers are written straight into a fresh deployment's two table changelogs,
all last seen two hours ago. A worker with ``CDP_ANONYMOUS_RETENTION=1h`` restores them,
reads its partitions for their expiry times and erases every one: the profile and its
identifier deleted, a tombstone on each changelog, a segment exit per segment, an
``expired`` privacy event. Measured: the sweep's rate (from ready until
``cdp_expired_profiles_total`` reaches the count) and the worker's resident memory (peak
and at the end), on the embedded broker this starts. On a shared machine the wall-clock
rate measures the neighbours too: the worker's CPU seconds for the sweep are reported
beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.fleet import Deployment, cpu_seconds, rss_bytes
from benchmarks.suite import machine, write_tables
from streams.events import Event, EventKind, IdentifierKind, Identity, identifier_key, now_ms
from streams.identity.resolver import Owner, profile_id_for
from streams.runtime.broker import free_port, start_broker
from streams.runtime.topics import ensure_topics
from streams.steps.process import Rules, process

HOUR_MS = 3_600_000
TEMPLATE_DEVICE = "device-template-0000000000000000"


def stored_visitor(rules: Rules, last_seen: int) -> tuple[str, bytes]:
    """A visitor's stored profile, as the worker stores it after three page views: its id
    and value (the template every benchmark profile is made from)."""
    key = identifier_key(IdentifierKind.ANONYMOUS_ID, TEMPLATE_DEVICE)
    profile_id = profile_id_for(key, 1)
    profile = None
    for n, (category, product) in enumerate([("toys", "pram"), ("toys", "doll"), ("baking", "")]):
        body: dict[str, Any] = {"url": f"https://shop.example/{category}/{product}"}
        body |= {"category": category, "product_id": product or None, "action": "view"}
        event = Event(EventKind.PAGE_VIEW, f"t{n}", last_seen - n, Identity(TEMPLATE_DEVICE), body)
        profile = process(profile, profile_id, event, rules, last_seen).profile
    assert profile is not None
    return profile_id, profile.to_json()


def visitors(
    count: int, partitions: int, template: tuple[str, bytes]
) -> Iterator[tuple[tuple[bytes, bytes], tuple[bytes, bytes]]]:
    """Per visitor: the profile table record and the identity table record."""
    template_id, value = template
    for n in range(count):
        device = f"device-{n:026d}"
        key = identifier_key(IdentifierKind.ANONYMOUS_ID, device)
        profile_id = profile_id_for(key, partitions)
        stored = value.replace(template_id.encode(), profile_id.encode())
        stored = stored.replace(TEMPLATE_DEVICE.encode(), device.encode())
        owner = Owner(profile_id, IdentifierKind.ANONYMOUS_ID).encode()
        yield (profile_id.encode(), stored), (key.encode(), owner)


def sweep(count: int, partitions: int, root: Path) -> dict[str, Any]:
    broker = start_broker(free_port(), log_file=root / "broker.log")
    deployment = Deployment(broker.bootstrap, root / "d", partitions)
    try:
        deployment.env["CDP_ANONYMOUS_RETENTION"] = "1h"
        ensure_topics(broker.bootstrap, deployment.settings)
        template = stored_visitor(Rules.load(), now_ms() - 2 * HOUR_MS)
        began = time.monotonic()
        write_tables(deployment, list(visitors(count, partitions, template)))
        written_s = time.monotonic() - began
        worker = deployment.add_worker()
        ready_s = worker.start(timeout=1800)
        ready = time.monotonic()
        assert worker.process is not None
        cpu_at_ready = cpu_seconds(worker.process.pid)
        peak = 0
        while (expired := worker.metric("cdp_expired_profiles_total")) < count:
            peak = max(peak, worker.rss())
            if time.monotonic() - ready > 1800:
                raise TimeoutError(f"only {expired:.0f} of {count} expired")
            time.sleep(1.0)
        sweep_s = time.monotonic() - ready
        sweep_cpu_s = cpu_seconds(worker.process.pid) - cpu_at_ready
        return {
            "profiles": count,
            "partitions": partitions,
            "written_s": written_s,
            "ready_s": ready_s,
            "sweep_s": sweep_s,
            "expired_per_s": count / sweep_s,
            "sweep_worker_cpu_s": sweep_cpu_s,
            "expired_per_worker_cpu_s": count / sweep_cpu_s,
            "rss_bytes_end": worker.rss(),
            "rss_bytes_peak": max(peak, rss_bytes(worker.process.pid, "VmHWM")),
        }
    finally:
        deployment.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        result = sweep(args.profiles, args.partitions, Path(root))
    print(json.dumps({"machine": machine(), "retention_sweep": result}, indent=2))


if __name__ == "__main__":
    main()
