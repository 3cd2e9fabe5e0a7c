"""The benchmark's reading of a worker's histograms: deltas and bucket quantiles."""

from __future__ import annotations

import math

import pytest

from benchmarks.fleet import Histogram, bucket_quantile


def test_quantiles_interpolate_within_their_bucket_as_prometheus_does() -> None:
    cumulative = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert bucket_quantile(cumulative, 0.5) == pytest.approx(0.01)
    assert bucket_quantile(cumulative, 0.7) == pytest.approx(0.01 + 0.09 * 0.5)
    assert bucket_quantile(cumulative, 0.99) == pytest.approx(0.1 + 0.9 * 0.9)


def test_a_quantile_in_the_unbounded_bucket_is_the_highest_finite_bound() -> None:
    assert bucket_quantile([(0.1, 1.0), (1.0, 2.0), (math.inf, 10.0)], 0.99) == 1.0


def test_since_counts_only_what_was_observed_after_the_first_reading() -> None:
    before = Histogram(10, 0.05, ((0.005, 10.0), (0.1, 10.0), (math.inf, 10.0)))
    after = Histogram(110, 5.05, ((0.005, 10.0), (0.1, 60.0), (math.inf, 110.0)))
    waited = after.since(before, 0.1)
    assert waited["count"] == 100
    assert waited["mean_ms"] == pytest.approx(50.0)
    assert waited["beyond_share"] == pytest.approx(0.5)
    assert waited["p50_ms"] == pytest.approx(100.0)
    assert waited["p99_ms"] == pytest.approx(100.0)  # beyond the last finite bound


def test_nothing_observed_since_is_reported_as_such() -> None:
    same = Histogram(3, 0.3, ((0.1, 3.0), (math.inf, 3.0)))
    assert same.since(same, 0.1) == {"count": 0}
