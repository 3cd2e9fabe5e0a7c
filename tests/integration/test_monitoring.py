"""The shipped monitoring, live: a real Prometheus scraping two real workers.

Prometheus (Debian's ``prometheus`` package, which ``.ci/run`` installs) runs on loopback
with the shipped ``deploy/prometheus/alerts.yml`` unchanged, scraping and evaluating every
second. The tests check that every rule evaluates without error, that the dashboard's
queries run, that probes and scrapes stay out of the lookup histogram, and that the stall
alerts go pending: the broker's when the broker is frozen (SIGSTOP), the worker's and the
consumer-lag one when a worker is stopped and the one left cannot keep up with its
partitions.

The tests share one set of processes and run in file order; the last two change it for
good (a worker stops, a backlog builds).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer

from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker, free_port, is_listening, start_broker
from streams.runtime.metrics import sample_total
from streams.runtime.topics import ensure_topics
from streams.settings import PROJECT_ROOT

from .conftest import Worker, settings_from, wait_until, worker_env

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "cdp-streams.json"
# Any job name: the rules must not depend on it.
JOB = "cdp-under-test"
# Grafana's variables, as Grafana would fill them in for "All" and a short range.
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


@dataclass
class PrometheusServer:
    process: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expression)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.get("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name]

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def start_prometheus(directory: Path, targets: list[str]) -> PrometheusServer:
    binary = shutil.which("prometheus")
    assert binary, "no prometheus server: install Debian's prometheus package (.ci/run does)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        # The shipped rules, as they are.
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
        ],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log_file = directory / "prometheus.log"
    with open(log_file, "ab") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(process, f"http://127.0.0.1:{port}", log_file)
    deadline = time.monotonic() + 30
    while not is_listening("127.0.0.1", port):
        assert process.poll() is None, server.log_tail()
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    return server


def ready(worker: Worker) -> Callable[[], bool]:
    return lambda: worker.get("/ready").status_code == 200


@dataclass
class Stack:
    broker: EmbeddedBroker
    workers: list[Worker]
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A broker of its own: one test freezes it.
    directory = tmp_path_factory.mktemp("monitoring")
    broker = start_broker(free_port(), log_file=directory / "broker.log")
    workers: list[Worker] = []
    prometheus: PrometheusServer | None = None
    try:
        env = worker_env(
            broker,
            directory / "one",
            CDP_API_TOKEN=uuid.uuid4().hex,
            CDP_BROKER_PROBE_INTERVAL_SECONDS="1",
            CDP_BROKER_PROBE_TIMEOUT_SECONDS="2",
        )
        ensure_topics(broker.bootstrap, settings_from(env))
        for number, data in enumerate(("one", "two")):
            worker_environment = {
                **env,
                "CDP_DATA_DIR": str(directory / data / "data"),
                "CDP_WEB_PORT": str(free_port()) if number else env["CDP_WEB_PORT"],
            }
            worker = Worker(
                settings_from(worker_environment),
                worker_environment,
                directory / f"worker-{data}.log",
            )
            workers.append(worker)
            worker.start()
        for worker in workers:
            wait_until(ready(worker), timeout=60)
        targets = [w.api.removeprefix("http://") for w in workers]
        prometheus = start_prometheus(directory, targets)
        yield Stack(broker, workers, prometheus)
    finally:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)
        if prometheus is not None:
            prometheus.process.terminate()
            prometheus.process.wait(20)
        for worker in workers:
            worker.stop()
        broker.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def first_state(
    prometheus: PrometheusServer, alert: str, timeout: float, **labels: str
) -> dict[str, Any]:
    """The alert ``alert`` (with ``labels``) as Prometheus first reports it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in prometheus.alerts(alert):
            if labels.items() <= found["labels"].items():
                return found
        time.sleep(0.5)
    raise AssertionError(f"{alert} {labels} never became active")


def shipped_alert_names() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def test_every_shipped_rule_evaluates_without_error(stack: Stack) -> None:
    prometheus = stack.prometheus

    def both_targets_up() -> bool:
        return len(prometheus.query(f'up{{job="{JOB}"}} == 1')) == 2

    wait_for(both_targets_up, 30, "both workers to be scraped")

    def all_evaluated() -> bool:
        return all(rule["health"] != "unknown" for rule in prometheus.rules())

    wait_for(all_evaluated, 30, "every rule to be evaluated")
    rules = prometheus.rules()
    assert {rule["name"] for rule in rules} == shipped_alert_names()
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # Healthy workers raise nothing.
    assert prometheus.get("/api/v1/alerts")["alerts"] == []


def test_probes_and_scrapes_are_not_counted_as_lookups(stack: Stack) -> None:
    worker = stack.workers[0]
    for _ in range(3):
        assert worker.get("/health").status_code == 200
        assert worker.get("/ready").status_code == 200
        assert worker.get("/metrics").status_code == 200
    # A real lookup is counted.
    assert worker.get("/profiles", anonymous_id=f"nobody-{uuid.uuid4().hex}").status_code == 404
    exposition = worker.get("/metrics").text
    assert sample_total(exposition, "cdp_lookup_seconds_count", endpoint="profile_by_identifier")
    for endpoint in ("health", "ready", "metrics"):
        assert f'endpoint="{endpoint}"' not in exposition
    wait_for(
        lambda: bool(stack.prometheus.query("cdp_lookup_seconds_count")),
        15,
        "the lookup to be scraped",
    )
    scraped = stack.prometheus.query('cdp_lookup_seconds_count{endpoint=~"health|ready|metrics"}')
    assert scraped == []


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            assert "$" not in expression, expression
            queries.append((panel["title"], expression))
    return queries


def test_every_dashboard_query_runs_and_the_stall_panels_show_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    queries = dashboard_queries()
    assert queries
    for _title, expression in queries:
        prometheus.query(expression)  # raises on a query Prometheus rejects
    by_title = {title: expression for title, expression in queries}

    def lag_by_partition() -> list[dict[str, Any]]:
        return prometheus.query(by_title["Consumer lag by partition"])

    # Every partition of the stages' topics is held by one worker and reported once.
    settings = stack.workers[0].settings
    # The input topics, the privacy requests and the two internal topics.
    read_topics = len(settings.input_topics) + 3
    wait_for(
        lambda: len(lag_by_partition()) == read_topics * settings.partitions,
        30,
        "a lag series for every partition",
    )
    reachable = prometheus.query(by_title["Broker reachable"])
    assert sorted(float(r["value"][1]) for r in reachable) == [1.0, 1.0]


def test_a_frozen_broker_makes_the_broker_alert_go_pending(stack: Stack) -> None:
    prometheus = stack.prometheus
    os.kill(stack.broker.process.pid, signal.SIGSTOP)
    try:
        alert = first_state(prometheus, "CdpBrokerUnreachable", 30)
        assert alert["state"] == "pending"
        assert alert["labels"]["job"] == JOB
        # The latency alerts see nothing: no event is processed, no histogram moves.
        assert prometheus.alerts("CdpEventToOutputLatencyHigh") == []
    finally:
        os.kill(stack.broker.process.pid, signal.SIGCONT)
    for worker in stack.workers:
        wait_until(ready(worker), timeout=90)
    wait_for(lambda: prometheus.alerts("CdpBrokerUnreachable") == [], 30, "the alert to end")


def test_a_stopped_worker_whose_partitions_the_other_cannot_keep_up_with(stack: Stack) -> None:
    prometheus = stack.prometheus
    kept, stopped = stack.workers
    pages = stopped.settings.input_topic(EventKind.PAGE_VIEW)
    exposition = stopped.get("/metrics").text
    held = sorted(
        int(sample.split('partition="')[1].split('"')[0])
        for sample in exposition.splitlines()
        if sample.startswith("cdp_consumer_lag_messages{") and f'topic="{pages}"' in sample
    )
    assert held, "the worker to stop holds no partition of the page views"
    partition = held[0]
    stopped_instance = stopped.api.removeprefix("http://")

    stopped.stop()
    down = first_state(prometheus, "CdpWorkerDown", 30, instance=stopped_instance)
    assert down["state"] == "pending"
    wait_for(
        lambda: (
            bool(
                prometheus.query(
                    f'cdp_consumer_lag_messages{{topic="{pages}", partition="{partition}"}}'
                )
            )
            and kept.get("/ready").status_code == 200
        ),
        60,
        "the remaining worker to take the partition over",
    )

    # More page views than one worker can take, into the partition it took over, until the
    # alert sees the backlog grow (bounded in count and time).
    producer = Producer({"bootstrap.servers": stack.broker.bootstrap, "linger.ms": 20})
    visitor = f"flood-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + 120
    sent = 0
    alert: dict[str, Any] | None = None
    try:
        while alert is None and time.monotonic() < deadline and sent < 3_000_000:
            for _ in range(5_000):
                value = json.dumps(
                    {
                        "event_id": f"{visitor}-{sent}",
                        "occurred_at": int(time.time() * 1000),
                        "identity": {"anonymous_id": visitor},
                        "url": "https://shop.example/toys",
                        "category": "toys",
                    }
                )
                try:
                    producer.produce(pages, value=value.encode(), partition=partition)
                except BufferError:
                    producer.poll(0.05)
                    continue
                sent += 1
            producer.poll(0)
            found = [
                a
                for a in prometheus.alerts("CdpConsumerLagGrowing")
                if a["labels"].get("partition") == str(partition)
            ]
            alert = found[0] if found else None
    finally:
        producer.flush(30)
    assert alert is not None, f"no lag alert after {sent} events"
    assert alert["state"] == "pending"
    assert alert["labels"]["topic"] == pages
    assert float(alert["value"]) > 1000
