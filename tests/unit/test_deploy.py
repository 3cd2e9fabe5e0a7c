"""The deploy files only use metrics a worker exports (a renamed metric must not go dark)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.runtime.metrics import REGISTRY
from streams.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> set[str]:
    return {
        family.name + suffix for family in REGISTRY.collect() for suffix in _SUFFIXES[family.type]
    }


@pytest.mark.parametrize(
    "path",
    [
        DEPLOY / "grafana" / "dashboards" / "cdp-streams.json",
        DEPLOY / "prometheus" / "alerts.yml",
    ],
    ids=lambda path: Path(path).name,
)
def test_deploy_files_reference_only_exported_metrics(path: Path) -> None:
    referenced = set(re.findall(r"\bcdp_[a-z_]+", path.read_text()))
    assert referenced
    assert referenced <= exported_series(), referenced - exported_series()
