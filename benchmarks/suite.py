"""The benchmark suite: throughput, event-to-segment latency, lookups, recovery, footprint.

    make bench                          # the full run (about ten minutes on 2 cores)
    make bench BROKER=apache-kafka      # the same on Apache Kafka (jars from `make kafka`),
                                        # with one-worker throughput under both guarantees
    python -m benchmarks.suite --smoke  # seconds; CI runs it so the suite cannot rot

Everything runs against a broker it starts on this machine (the embedded one, or Apache
Kafka with ``--broker apache-kafka``) with real ``cdp worker`` processes. It prints a table
and writes ``benchmarks/results/latest.json`` (``latest-apache-kafka.json`` on Kafka).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.core import core_ceiling
from benchmarks.fleet import Deployment, Histogram, Worker
from benchmarks.measure import (
    LookupLoad,
    SegmentChangeClock,
    all_partitions,
    produce,
    raw_consume_rate,
    shopper_events,
    summary_ms,
    write_profile_changelog,
    write_records,
)
from streams.demo.traffic import ACTIONS, parse_mix
from streams.events import Event
from streams.runtime.broker import EmbeddedBroker, free_port, start_broker
from streams.runtime.kafka_broker import ApacheKafkaBroker, start_apache_kafka
from streams.runtime.topics import ensure_topics
from streams.runtime.worker_topics import IDENTITIES_TABLE, PROFILES_TABLE, changelog_topic

RESULTS = Path(__file__).parent / "results" / "latest.json"
BROKERS = ("embedded", "apache-kafka")
AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"
PROFILE = RESULTS.with_name("worker-profile.svg")
PER_MILLION = 1_000_000
TARGETS = {
    "throughput_events_per_s": 15_000,
    "two_worker_speedup": 1.7,
    "latency_p99_ms_at_2000": 100,
    "lookup_p99_ms": 5,
    "ready_with_local_state_s": 5,
    "restore_profiles_per_s": 100_000,
    "disk_bytes_per_million_profiles": 300 * 2**20,
    "rss_bytes_per_million_profiles": 2**30,
}


@dataclass
class Plan:
    events: int
    shoppers: int
    duration_s: float
    fixed_rate: float
    lookup_rate: float
    profiles: int
    partitions: int
    mix: dict[str, float] | None = None
    """Event mix of the load (see ``streams.demo.traffic.parse_mix``); None: the demo's."""

    def load(self, count: int, seed: int) -> Iterator[Event]:
        return shopper_events(count, self.shoppers, seed, self.mix)


FULL = Plan(
    events=20_000,
    shoppers=20_000,
    duration_s=15,
    fixed_rate=2_000,
    lookup_rate=500,
    profiles=1_000_000,
    partitions=8,
)
SMOKE = Plan(
    events=300,
    shoppers=300,
    duration_s=2,
    fixed_rate=100,
    lookup_rate=50,
    profiles=6_000,  # 1,500 a partition: enough for the bulk restore (1,000 or more)
    partitions=4,
)


class Bench:
    def __init__(
        self,
        plan: Plan,
        root: Path,
        progress: Progress,
        profile: Path | None = None,
        broker: str = "embedded",
    ) -> None:
        self.plan = plan
        self.root = root
        self.progress = progress
        self.profile = profile
        self.broker: EmbeddedBroker | ApacheKafkaBroker = (
            start_apache_kafka(free_port(), log_file=root / "broker.log", heap="1g")
            if broker == "apache-kafka"
            else start_broker(free_port(), log_file=root / "broker.log")
        )
        self.deployments: list[Deployment] = []

    def deployment(self, workers: int, guarantee: str = AT_LEAST_ONCE) -> Deployment:
        deployment = Deployment(
            self.broker.bootstrap,
            self.root / f"d{len(self.deployments)}",
            self.plan.partitions,
            guarantee,
        )
        self.deployments.append(deployment)
        ensure_topics(self.broker.bootstrap, deployment.settings)
        deployment.start(workers)
        return deployment

    def close(self) -> None:
        for deployment in self.deployments:
            deployment.stop()
        self.broker.stop()

    def produce(
        self,
        deployment: Deployment,
        events: Iterator[Event],
        total: int,
        label: str,
        rate: float | None = None,
    ) -> dict[str, float]:
        task = self.progress.add_task(label, total=total)
        sent = produce(
            self.broker.bootstrap,
            deployment.settings,
            events,
            rate,
            tick=lambda n: self.progress.update(task, completed=n),
        )
        self.progress.update(task, completed=total)
        return sent

    def wait(self, deployment: Deployment, count: int, label: str) -> float:
        task = self.progress.add_task(label, total=count)
        deadline = time.monotonic() + max(600.0, count / 20)
        while (done := deployment.processed()) < count:
            self.progress.update(task, completed=done)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {done:.0f} of {count} processed")
            # Not faster: every poll makes the worker render its metrics on its event loop.
            time.sleep(0.5)
        self.progress.update(task, completed=count)
        return time.monotonic()

    def throughput(self, workers: int, guarantee: str = AT_LEAST_ONCE) -> dict[str, Any]:
        """Full-pipeline events/s draining a backlog produced as fast as the broker takes it."""
        plan = self.plan
        deployment = self.deployment(workers, guarantee)
        started = time.monotonic()
        spy = self.record_profile(deployment) if workers == 1 and self.profile else None
        self.produce(
            deployment,
            plan.load(plan.events, seed=workers),
            plan.events,
            f"throughput, {workers} worker(s), {guarantee}: produce",
        )
        finished = self.wait(
            deployment, plan.events, f"throughput, {workers} worker(s), {guarantee}: process"
        )
        rate = plan.events / (finished - started)
        if spy is not None:
            spy.wait(60)
        ceiling = raw_consume_rate(
            self.broker.bootstrap, deployment.settings.input_topics, plan.events
        )
        deployment.stop()
        return {
            "workers": workers,
            "guarantee": guarantee,
            "events": plan.events,
            "events_per_s": rate,
            "raw_consume_events_per_s": ceiling,
            "share_of_raw": rate / ceiling,
        }

    def record_profile(self, deployment: Deployment) -> subprocess.Popen[bytes]:
        """py-spy samples the worker while it drains the backlog (the first few seconds
        of a run that takes longer), into a flame graph."""
        assert self.profile is not None
        process = deployment.workers[0].process
        assert process is not None
        seconds = max(1, min(20, int(self.plan.events / 2_000)))
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking"]
        command += ["-d", str(seconds), "-r", "200", "-o", str(self.profile)]
        with open(self.profile.with_suffix(".log"), "wb") as log:
            return subprocess.Popen(
                [*command, "-p", str(process.pid)], stdout=log, stderr=subprocess.STDOUT
            )

    def latency(self, rate: float, lookups: bool) -> dict[str, Any]:
        """Produce-to-segment-change latency at a fixed rate; lookups alongside if asked."""
        plan = self.plan
        deployment = self.deployment(1)
        clock = SegmentChangeClock(self.broker.bootstrap, deployment.settings)
        count = int(rate * plan.duration_s)
        events = list(plan.load(count, seed=int(rate)))
        emails = sorted({e.identity.email for e in events if e.identity.email}) or ["x@example.com"]
        load = LookupLoad(deployment.workers[0].api, emails, plan.lookup_rate, token(deployment))
        lookup_result: dict[str, Any] = {}

        def run_lookups() -> None:
            lookup_result.update(load.run(plan.duration_s))

        looker = threading.Thread(target=run_lookups)
        worker = deployment.workers[0]
        before = self.worker_waits(worker)
        if lookups:
            looker.start()
        sent = self.produce(deployment, iter(events), count, f"latency at {rate:,.0f}/s", rate)
        if lookups:
            looker.join()
        lookup_bound = TARGETS["lookup_p99_ms"] / 1000
        # The lookups' waits as they ran; the events' once every event is handled.
        waited = {
            name: after.since(before[name], lookup_bound)
            for name, after in self.worker_waits(worker).items()
        }
        self.wait(deployment, count, f"latency at {rate:,.0f}/s: process")
        waited["input_wait"] = self.worker_waits(worker)["input_wait"].since(
            before["input_wait"], TARGETS["latency_p99_ms_at_2000"] / 1000
        )
        time.sleep(1.0)  # the last outputs reach the clock's consumer
        clock.close()
        result: dict[str, Any] = {"rate": rate, **summary_ms(clock.latencies(sent))}
        if lookups:
            result["lookups"] = lookup_result
        result["in_the_worker"] = waited
        result["ready_with_local_state_s"] = self.restart(deployment)
        deployment.stop()
        return result

    @staticmethod
    def worker_waits(worker: Worker) -> dict[str, Histogram]:
        """Where time goes inside the worker: an event's wait until the worker starts on it
        (the broker's delivery and the fetch), the event loop's lag (a lookup's wait to be
        started on) and a decision's own handling."""
        return {
            "input_wait": worker.histogram("cdp_input_wait_seconds"),
            "event_loop_lag": worker.histogram("cdp_event_loop_lag_seconds"),
            "handling": worker.histogram("cdp_lookup_seconds", endpoint="newsletter_popup"),
        }

    def restart(self, deployment: Deployment) -> float:
        worker = deployment.workers[0]
        worker.stop()
        return worker.start()

    def recheck_times_read(self, worker: Worker) -> dict[str, float]:
        """Wait until the worker has read its partitions for recheck times (after its
        restore: RSS counts the schedule); how long it took and how many it holds."""
        task = self.progress.add_task("restore: worker reads recheck times", total=None)
        started = time.monotonic()
        # The gauge is set once a second, after the first assignment is seen.
        time.sleep(2.0)
        while worker.metric("cdp_segment_recheck_partitions_unread") > 0:
            if time.monotonic() - started > 600:
                raise TimeoutError("the worker did not finish reading its recheck times")
            time.sleep(0.5)
        self.progress.update(task, total=1, completed=1)
        return {
            "recheck_scan_s": worker.metric("cdp_segment_recheck_scan_seconds_total"),
            "rechecks_scheduled": worker.metric("cdp_segment_rechecks_scheduled"),
        }

    def restore(self) -> dict[str, Any]:
        """Restore speed and footprint for ``plan.profiles`` profiles in the changelog."""
        plan = self.plan
        source = self.deployments[0]
        deployment = self.deployment(0)  # its worker starts once the changelog is written
        changelog = changelog_topic(deployment.settings, PROFILES_TABLE)
        templates = changelog_topic(source.settings, PROFILES_TABLE)
        create_compacted(self.broker.bootstrap, changelog, plan.partitions)
        task = self.progress.add_task("restore: write the profile changelog", total=None)
        write_profile_changelog(
            self.broker.bootstrap,
            changelog,
            plan.profiles,
            stored_profiles(self.broker.bootstrap, templates),
        )
        self.progress.update(task, total=1, completed=1)
        # What the broker serves of it: the most any restore could read.
        ceiling = raw_consume_rate(self.broker.bootstrap, [changelog], plan.profiles)
        worker = deployment.add_worker()
        task = self.progress.add_task("restore: worker recovers", total=None)
        restore_s = worker.start(timeout=1800)
        self.progress.update(task, total=1, completed=1)
        # The restore itself, as the worker times it: what is left of restore_s is the
        # process starting and joining the group, the same as in any restart.
        restored = worker.metric("cdp_changelog_restored_records_total")
        restoring_s = worker.metric("cdp_changelog_restore_seconds_total")
        rechecks = self.recheck_times_read(worker)
        disk, rss = worker.state_bytes(), worker.rss()
        restart_s = self.restart(deployment)
        deployment.stop()
        scale = PER_MILLION / plan.profiles
        return {
            "profiles": plan.profiles,
            "restore_s": restore_s,
            "ready_without_local_state_profiles_per_s": plan.profiles / restore_s,
            "restored_in_bulk": restored,
            "bulk_restore_s": restoring_s,
            "restore_profiles_per_s": restored / restoring_s if restoring_s else 0.0,
            "raw_consume_records_per_s": ceiling,
            "ready_with_local_state_s": restart_s,
            **rechecks,
            "disk_bytes": disk,
            "rss_bytes": rss,
            "disk_bytes_per_million_profiles": disk * scale,
            "rss_bytes_per_million_profiles": rss * scale,
        }


def token(deployment: Deployment) -> str | None:
    secret = deployment.settings.api_token
    return secret.get_secret_value() if secret is not None else None


def create_compacted(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(
        topic, num_partitions=partitions, replication_factor=1, config={"cleanup.policy": "compact"}
    )
    for future in admin.create_topics([new]).values():
        future.result(30)


TableRecord = tuple[bytes, bytes]


def write_tables(deployment: Deployment, records: list[tuple[TableRecord, TableRecord]]) -> None:
    """Per person a profile table record and an identity table record (key, value), written
    straight into the changelogs of a deployment no worker of which has started yet."""
    settings = deployment.settings
    identities = changelog_topic(settings, IDENTITIES_TABLE)
    profiles = changelog_topic(settings, PROFILES_TABLE)
    for topic in (identities, profiles):
        create_compacted(deployment.bootstrap, topic, deployment.partitions)
    write_records(deployment.bootstrap, profiles, (profile for profile, _ in records))
    write_records(deployment.bootstrap, identities, (identity for _, identity in records))


def stored_profiles(bootstrap: str, changelog: str, limit: int = 500) -> list[tuple[bytes, bytes]]:
    """Real stored profiles (key, value) from a worker's changelog, as templates."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-templates-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(all_partitions(consumer, [changelog]))
    found: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 20
    while len(found) < limit and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=1.0):
            key, value = message.key(), message.value()
            if message.error() is None and key and value:
                found[key] = value
    consumer.close()
    if not found:
        raise RuntimeError(f"no stored profiles in {changelog}")
    return list(found.items())[:limit]


def run(
    plan: Plan,
    console: Console,
    profile: Path | None = None,
    broker: str = "embedded",
    throughput_only: bool = False,
) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with tempfile.TemporaryDirectory() as root, Progress(*columns, console=console) as progress:
        bench = Bench(plan, Path(root), progress, profile, broker)
        try:
            one = bench.throughput(1)
            # Transactions need Apache Kafka (the embedded broker has none).
            exactly_once = bench.throughput(1, EXACTLY_ONCE) if broker == "apache-kafka" else None
            guarantees = {
                "one_worker": one,
                "one_worker_exactly_once": exactly_once,
                "exactly_once_share": exactly_once["events_per_s"] / one["events_per_s"]
                if exactly_once
                else None,
            }
            if throughput_only:
                return {**about(plan, broker), "throughput": guarantees}
            core = core_ceiling(list(plan.load(plan.events, seed=1)))
            two = bench.throughput(2)
            half = max(1.0, one["events_per_s"] / 2)
            at_fixed = bench.latency(plan.fixed_rate, lookups=False)
            at_half = bench.latency(half, lookups=False)
            with_lookups = bench.latency(half, lookups=True)
            restore = bench.restore()
        finally:
            bench.close()
    return {
        **about(plan, broker),
        "throughput": {
            **guarantees,
            "two_workers": two,
            "two_worker_speedup": two["events_per_s"] / one["events_per_s"],
            "core_in_memory": core,
        },
        "latency": {
            "fixed_rate": at_fixed,
            "half_of_max": at_half,
            "half_of_max_with_lookups": with_lookups,
        },
        "recovery": restore,
        "targets": TARGETS,
    }


def about(plan: Plan, broker: str) -> dict[str, Any]:
    """When, where and with what a run was taken."""
    return {
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "broker": broker,
        "plan": plan.__dict__,
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def input_wait_summary(wait: dict[str, float]) -> str:
    if not wait.get("count"):
        return "not observed"
    return (
        f"p50 {wait['p50_ms']:,.0f} / p99 {wait['p99_ms']:,.0f} ms (from the worker's buckets), "
        f"{wait['beyond_share']:.1%} over {TARGETS['latency_p99_ms_at_2000']} ms"
    )


def guarantee_rows(t: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """One-worker throughput under each processing guarantee."""
    exactly_once = t.get("one_worker_exactly_once")
    return [
        (
            "throughput, 1 worker",
            f"{t['one_worker']['events_per_s']:,.0f} events/s",
            f"≥ {TARGETS['throughput_events_per_s']:,}",
            t["one_worker"]["events_per_s"] >= TARGETS["throughput_events_per_s"],
        ),
        (
            "  the same, exactly_once (one Kafka transaction per batch)",
            f"{exactly_once['events_per_s']:,.0f} events/s "
            f"({t['exactly_once_share']:.0%} of at_least_once)"
            if exactly_once
            else "not measured: the embedded broker has no transactions",
            "",
            None,
        ),
    ]


def print_table(
    results: dict[str, Any], rows: list[tuple[str, str, str, bool | None]], console: Console
) -> None:
    table = Table(
        title=f"cdp-streams benchmark on {results.get('broker', 'embedded')} "
        f"({results['machine']['cores']} cores, {results['machine']['cpu']})"
    )
    for column in ("measure", "result", "target", "met"):
        table.add_column(column)
    for measure, result, target, met in rows:
        table.add_row(measure, result, target, "" if met is None else ("yes" if met else "no"))
    console.print(table)


def report(results: dict[str, Any], console: Console) -> None:
    if "latency" not in results:  # --throughput-only
        print_table(results, guarantee_rows(results["throughput"]), console)
        return
    t, lat, rec = results["throughput"], results["latency"], results["recovery"]
    lookups = lat["half_of_max_with_lookups"].get("lookups", {})
    waited = lat["half_of_max_with_lookups"].get("in_the_worker", {})
    lag, handling = waited.get("event_loop_lag", {}), waited.get("handling", {})
    rows = [
        *guarantee_rows(t),
        (
            "  raw confluent-kafka consume, same topics",
            f"{t['one_worker']['raw_consume_events_per_s']:,.0f} events/s",
            "ceiling",
            None,
        ),
        (
            "  the pure core in memory: no Kafka, no Faust",
            f"{t['core_in_memory']['events_per_s']:,.0f} events/s (µs per event: ingest "
            f"{t['core_in_memory']['ingest_us_per_event']:.0f}, identity "
            f"{t['core_in_memory']['identity_us_per_event']:.0f}, profile "
            f"{t['core_in_memory']['profile_us_per_event']:.0f})",
            "",
            None,
        ),
        (
            "throughput, 2 workers",
            f"{t['two_workers']['events_per_s']:,.0f} events/s ({t['two_worker_speedup']:.2f}x)",
            f"≥ {TARGETS['two_worker_speedup']}x",
            t["two_worker_speedup"] >= TARGETS["two_worker_speedup"],
        ),
        *(
            (
                f"event → segment change at {r['rate']:,.0f}/s"
                + (", with the lookups below" if "lookups" in r else ""),
                f"p50 {r['p50_ms']:,.0f} / p99 {r['p99_ms']:,.0f} / p99.9 {r['p999_ms']:,.0f} ms "
                f"({r['count']} changes)",
                f"p99 ≤ {TARGETS['latency_p99_ms_at_2000']} ms" if key == "fixed_rate" else "",
                r["p99_ms"] <= TARGETS["latency_p99_ms_at_2000"] if key == "fixed_rate" else None,
            )
            if part == "change"
            else (
                "  in the worker: the event's wait until the worker started on it",
                input_wait_summary(r["in_the_worker"].get("input_wait", {})),
                "",
                None,
            )
            for key, r in lat.items()
            for part in ("change", "input_wait")
        ),
        (
            f"lookup at {lookups.get('rate_reached', 0):,.0f}/s during ingest",
            f"p50 {lookups.get('p50_ms', float('nan')):.1f} / p99 "
            f"{lookups.get('p99_ms', float('nan')):.1f} ms ({lookups.get('failures', 0)} failed)",
            f"p99 ≤ {TARGETS['lookup_p99_ms']} ms",
            lookups.get("p99_ms", float("inf")) <= TARGETS["lookup_p99_ms"],
        ),
        (
            "  in the worker: event-loop lag (a lookup's wait to be started on); handling",
            f"lag mean {lag.get('mean_ms', float('nan')):.1f} ms, "
            f"{lag.get('beyond_share', float('nan')):.0%} of samples over "
            f"{TARGETS['lookup_p99_ms']} ms; handling mean "
            f"{handling.get('mean_ms', float('nan')):.2f} ms",
            "",
            None,
        ),
        (
            "ready after restart, local state kept",
            f"{rec['ready_with_local_state_s']:.1f} s ({rec['profiles']:,} profiles)",
            f"≤ {TARGETS['ready_with_local_state_s']} s",
            rec["ready_with_local_state_s"] <= TARGETS["ready_with_local_state_s"],
        ),
        (
            "restore from the changelog",
            f"{rec['restore_profiles_per_s']:,.0f} profiles/s "
            f"({rec['restored_in_bulk']:,.0f} in {rec['bulk_restore_s']:.1f} s)",
            f"≥ {TARGETS['restore_profiles_per_s']:,}",
            rec["restore_profiles_per_s"] >= TARGETS["restore_profiles_per_s"],
        ),
        (
            "  process start to ready, no local state",
            f"{rec['ready_without_local_state_profiles_per_s']:,.0f} profiles/s "
            f"({rec['profiles']:,} in {rec['restore_s']:.1f} s)",
            "",
            None,
        ),
        (
            "  raw confluent-kafka read of that changelog",
            f"{rec['raw_consume_records_per_s']:,.0f} records/s",
            "ceiling",
            None,
        ),
        (
            "  then reading the profiles' recheck times (in the background, once ready)",
            f"{rec['recheck_scan_s']:.1f} s of the event loop; "
            f"{rec['rechecks_scheduled']:,.0f} profiles with a recheck to come",
            "",
            None,
        ),
        (
            "disk per 1M profiles",
            f"{rec['disk_bytes_per_million_profiles'] / 2**20:,.0f} MB",
            "≤ 300 MB",
            rec["disk_bytes_per_million_profiles"] <= TARGETS["disk_bytes_per_million_profiles"],
        ),
        (
            "worker RSS per 1M profiles",
            f"{rec['rss_bytes_per_million_profiles'] / 2**20:,.0f} MB",
            "≤ 1,024 MB",
            rec["rss_bytes_per_million_profiles"] <= TARGETS["rss_bytes_per_million_profiles"],
        ),
    ]
    print_table(results, rows, console)
    plan = results["plan"]
    mix = plan.get("mix")
    mixed = ", ".join(f"{name}={weight:g}" for name, weight in mix.items()) if mix else "the demo's"
    console.print(f"load: {plan['shoppers']:,} shoppers, event mix {mixed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument("--events", type=int, help="backlog size for throughput")
    parser.add_argument("--profiles", type=int, help="profiles in the changelog for restore")
    parser.add_argument("--shoppers", type=int, help="simulated shoppers the load comes from")
    parser.add_argument(
        "--mix",
        type=parse_mix,
        help="event mix as name=weight pairs, e.g. page-view=80,order=20 (names: event "
        f"kinds or actions: {', '.join(ACTIONS)})",
    )
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default="embedded",
        help="which broker the suite starts (apache-kafka: jars from `make kafka`, Java 17)",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only one-worker throughput (under both guarantees on apache-kafka)",
    )
    parser.add_argument(
        "--output", type=Path, help=f"default {RESULTS}, or latest-apache-kafka.json beside it"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        nargs="?",
        const=PROFILE,
        help=f"py-spy flame graph of the one-worker throughput run (default {PROFILE})",
    )
    args = parser.parse_args()
    if args.output is None:
        args.output = (
            RESULTS if args.broker == "embedded" else RESULTS.with_stem("latest-apache-kafka")
        )
        if args.throughput_only:  # beside the full run's results, not over them
            args.output = args.output.with_stem(f"{args.output.stem}-throughput")
    plan = SMOKE if args.smoke else FULL
    if args.events:
        plan.events = args.events
    if args.profiles:
        plan.profiles = args.profiles
    if args.shoppers:
        plan.shoppers = args.shoppers
    if args.mix:
        plan.mix = args.mix
    console = Console()
    # A fresh clone has no results folder; the flame graph is written into it mid-run.
    for written in (args.output, args.profile):
        if written is not None:
            written.parent.mkdir(parents=True, exist_ok=True)
    results = run(plan, console, args.profile, args.broker, args.throughput_only)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    report(results, console)
    console.print(f"written to {args.output}")
    if args.profile:
        console.print(f"worker profile in {args.profile}")


if __name__ == "__main__":
    main()
