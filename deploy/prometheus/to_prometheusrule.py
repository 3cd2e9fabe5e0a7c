"""Writes alerts.yml as a Prometheus Operator PrometheusRule (deploy/k8s/monitoring).

    python deploy/prometheus/to_prometheusrule.py > deploy/k8s/monitoring/prometheusrule.yaml

The unit tests fail when the two disagree, so the rules have one source: alerts.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path(__file__).resolve().parent / "alerts.yml"
HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/to_prometheusrule.py.\n"
)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "cdp-streams", "labels": {"app.kubernetes.io/name": "cdp-streams"}},
        "spec": {"groups": rules["groups"]},
    }


def render() -> str:
    rules = yaml.safe_load(ALERTS.read_text())
    return HEADER + yaml.safe_dump(prometheus_rule(rules), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
