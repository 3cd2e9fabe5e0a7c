"""Due steps wait until the input produced before their time is applied (two hops)."""

from __future__ import annotations

from streams.runtime.applied_inputs import AppliedInputs


def test_nothing_is_applied_before_two_snapshots_are_reached() -> None:
    applied = AppliedInputs[str]()
    assert applied.update(1_000, {}) == 0
    applied.snapshot(1_000, {"orders": 5, "profiles": 0})
    # The restarted worker holds the orders partition but has applied none of its backlog.
    assert applied.update(2_000, {"orders": 1}) == 0
    assert not applied.wants_snapshot()
    assert applied.update(3_000, {"orders": 4}) == 0  # first hop reached
    assert applied.wants_snapshot()
    # The orders' profiles live in another partition: reaching the internal topic's end as it
    # was after the first hop is the second hop.
    applied.snapshot(3_000, {"orders": 5, "profiles": 3})
    assert applied.update(4_000, {"orders": 4, "profiles": 1}) == 0
    assert applied.update(5_000, {"orders": 4, "profiles": 2}) == 1_000


def test_the_instant_follows_the_snapshots_and_never_goes_back() -> None:
    applied = AppliedInputs[int]()
    for now in range(1, 6):
        applied.update(now * 1_000, {0: 9})
        if applied.wants_snapshot():
            applied.snapshot(now * 1_000, {0: 10})
    assert applied.update(6_000, {0: 9}) == 4_000
    applied.snapshot(6_000, {0: 20})  # new input: this one is reached later
    assert applied.update(7_000, {0: 9}) == 4_000
    assert applied.update(8_000, {0: 19}) == 5_000


def test_empty_partitions_are_applied_and_a_reset_forgets_everything() -> None:
    applied = AppliedInputs[int]()
    applied.snapshot(1_000, {0: 0, 1: 0})
    applied.update(1_500, {})
    applied.snapshot(1_500, {0: 0, 1: 0})
    assert applied.update(2_000, {}) == 1_000
    applied.reset()
    assert applied.update(3_000, {}) == 0
    assert applied.wants_snapshot()
