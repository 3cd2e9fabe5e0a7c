"""The collector's benchmark: events/s accepted by one ``cdp collector`` process with batches
of 100, and request latency at a fixed request rate.

    make bench-collector                     # the full run (about half a minute)
    python -m benchmarks.collector --smoke   # seconds

The collector runs pinned to one core and the load generator (benchmarks.collector_load) in
a process of its own on the other, against the embedded broker on loopback. Accepted means
answered 200, which the collector does only once Kafka has confirmed every event. Prints a
table and writes ``benchmarks/results/collector.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from streams.runtime.broker import free_port, start_broker
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

RESULTS = Path(__file__).parent / "results" / "collector.json"
KEY = "bench-key"
TARGETS = {"events_per_s": 10_000, "p99_ms_at_1000_rps": 50.0}


def _pinned(cpu: int) -> Any:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})

    return pin


def load(url: str, seconds: float, *mode: str) -> dict[str, Any]:
    """Run the load generator as its own process, on the second core."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.collector_load",
            "--url",
            url,
            "--key",
            KEY,
            "--seconds",
            str(seconds),
            *mode,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
        preexec_fn=_pinned(1),
    )
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def track_histogram(url: str) -> dict[float, float]:
    """Cumulative counts of cdp_collector_request_seconds{route="track"} by bucket bound."""
    found: dict[float, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("cdp_collector_request_seconds_bucket{") and 'route="track"' in line:
            bound = line.split('le="')[1].split('"')[0]
            found[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return found


def quantile_bound(before: dict[float, float], after: dict[float, float], q: float) -> float:
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    for bound, count in counts.items():
        if total and count >= q * total:
            return bound * 1000
    return float("nan")


def collector_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run(seconds: float, rate: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cdp-bench-collector-") as tmp:
        broker = start_broker(free_port(), log_file=Path(tmp) / "broker.log")
        port = free_port()
        prefix = f"b{uuid.uuid4().hex[:6]}."
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CDP_")},
            "CDP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CDP_TOPIC_PREFIX": prefix,
            "CDP_COLLECTOR_PORT": str(port),
            "CDP_COLLECTOR_WRITE_KEYS": f"{KEY}:bench",
            "CDP_DATA_DIR": str(Path(tmp) / "data"),
        }
        ensure_topics(broker.bootstrap, Settings.model_validate({"topic_prefix": prefix}))
        log_file = Path(tmp) / "collector.log"
        with open(log_file, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams", "collector"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_pinned(0),
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the collector did not start:\n{log_file.read_text()}")
                time.sleep(0.1)
            load(url, min(2.0, seconds), "throughput", "--concurrency", "4")  # warm-up
            cpu_before = collector_cpu_seconds(process.pid)
            throughput = load(
                url, seconds, "throughput", "--concurrency", str(concurrency), "--batch-size", "100"
            )
            cpu = collector_cpu_seconds(process.pid) - cpu_before
            throughput["collector_cpu_s_per_s"] = round(cpu / throughput["seconds"], 2)
            cpu_before = collector_cpu_seconds(process.pid)
            before = track_histogram(url)
            latency = load(url, seconds, "latency", "--rate", str(rate))
            cpu = collector_cpu_seconds(process.pid) - cpu_before
            latency["collector_cpu_s_per_s"] = round(cpu / seconds, 2)
            # The collector's own view (arrival to answer), without the generator's queueing:
            # the upper bound of the histogram bucket holding the 99th percentile.
            latency["collector_p99_bucket_ms"] = quantile_bound(before, track_histogram(url), 0.99)
        finally:
            process.terminate()
            process.wait(30)
            broker.stop()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "throughput": throughput,
        "latency": latency,
        "targets": TARGETS,
    }


def report(results: dict[str, Any], console: Console) -> None:
    t, lat = results["throughput"], results["latency"]
    table = Table("collector (one process, one core)", "measured", "target")
    table.add_row(
        "events/s accepted, batches of 100",
        f"{t['events_per_s']:,} ({t['collector_cpu_s_per_s']} CPU s/s; statuses {t['statuses']})",
        f">= {TARGETS['events_per_s']:,}",
    )
    table.add_row(
        "batch request p50 / p99 (ms)", f"{t['request_p50_ms']} / {t['request_p99_ms']}", ""
    )
    table.add_row(
        f"single-event requests at {lat['target_requests_per_s']:,.0f}/s: p50 / p99 / max (ms)",
        f"{lat['p50_ms']} / {lat['p99_ms']} / {lat['max_ms']} "
        f"(collector's own p99 <= {lat['collector_p99_bucket_ms']:g} ms; "
        f"generator late by up to {lat['generator_max_lateness_ms']} ms) "
        f"(achieved {lat['achieved_requests_per_s']}/s, {lat['collector_cpu_s_per_s']} CPU s/s; "
        f"statuses {lat['statuses']})",
        f"p99 <= {TARGETS['p99_ms_at_1000_rps']}",
    )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, small rates")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s for latency")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.rate = 2.0, 100.0
    results = run(args.seconds, args.rate, args.concurrency)
    report(results, Console())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
