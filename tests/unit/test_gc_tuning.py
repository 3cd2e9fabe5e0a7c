"""The garbage collector's pauses are measured, and frozen objects are no longer walked."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from streams.runtime import gc_tuning
from streams.runtime.metrics import REGISTRY


def pauses(generation: int) -> tuple[float, float]:
    labels = {"generation": str(generation)}
    count = REGISTRY.get_sample_value("cdp_gc_pause_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("cdp_gc_pause_seconds_sum", labels) or 0.0
    return count, total


@pytest.fixture
def pause_clock() -> Iterator[None]:
    clock = gc_tuning.PauseClock()
    gc.callbacks.append(clock)
    yield
    gc.callbacks.remove(clock)


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("pause_clock")
def test_every_collection_is_timed_by_generation() -> None:
    count, total = pauses(2)
    started = time.perf_counter()
    gc.collect()
    elapsed = time.perf_counter() - started
    new_count, new_total = pauses(2)
    assert new_count == count + 1
    assert 0 < new_total - total <= elapsed


@pytest.mark.usefixtures("unfrozen_afterwards")
def test_objects_alive_at_the_freeze_are_left_out_of_full_collections() -> None:
    kept = [[n] for n in range(50_000)]
    assert id(kept[0]) in walked()
    frozen = gc_tuning.freeze_long_lived()
    assert frozen >= len(kept)
    assert REGISTRY.get_sample_value("cdp_gc_frozen_objects") == frozen
    assert id(kept[0]) not in walked()
    made_after = [0]
    assert id(made_after) in walked()


def walked() -> set[int]:
    """The objects a collection walks (``gc.get_objects`` leaves the frozen ones out)."""
    return {id(o) for o in gc.get_objects()}
