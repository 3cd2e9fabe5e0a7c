"""A few seconds of the benchmark suite, so that `make bench` cannot rot (no figures asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import chosen_broker_kind


def test_benchmark_suite_runs_end_to_end_and_writes_its_results(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.suite", "--smoke", "--output", str(output)),
            *("--shoppers", "250", "--mix", "page-view=7,identify=2,order=1"),
            *("--broker", chosen_broker_kind()),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        # The suite's workers keep their state where the tests keep theirs (tests/conftest.py).
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(output.read_text())
    assert results["broker"] == chosen_broker_kind()
    throughput = results["throughput"]
    assert throughput["one_worker"]["events_per_s"] > 0
    assert throughput["two_workers"]["raw_consume_events_per_s"] > 0
    assert throughput["core_in_memory"]["events_per_s"] > 0
    assert results["latency"]["fixed_rate"]["count"] > 0
    assert results["latency"]["half_of_max"]["count"] > 0
    with_lookups = results["latency"]["half_of_max_with_lookups"]
    assert with_lookups["lookups"]["count"] > 0
    assert with_lookups["in_the_worker"]["event_loop_lag"]["count"] > 0
    assert with_lookups["in_the_worker"]["handling"]["count"] > 0
    assert results["recovery"]["restore_profiles_per_s"] > 0
    assert results["recovery"]["disk_bytes"] > 0
    # The restored profiles come from the run's own traffic: some have carts or email opens.
    assert results["recovery"]["rechecks_scheduled"] > 0
    assert "restore from the changelog" in run.stdout
    assert results["plan"]["mix"] == {"page-view": 7.0, "identify": 2.0, "order": 1.0}
    assert "load: 250 shoppers, event mix page-view=7, identify=2, order=1" in run.stdout


def test_collector_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    output = tmp_path / "collector.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.collector", "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(output.read_text())
    assert results["throughput"]["accepted_events"] > 0
    assert set(results["throughput"]["statuses"]) == {"200"}
    assert results["latency"]["statuses"] == {"200": results["latency"]["requests"]}


def test_erasure_benchmark_runs_and_reports_completions(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.erasure"),
            *("--profiles", "100", "--rate", "100", "--seconds", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout)
    erasing = results["load_with_erasures"]
    assert erasing["completed"] == erasing["erasures"] == 100
    assert erasing["completion"]["count"] == 100
    assert results["load_alone"]["worker_cpu_s"] > 0
