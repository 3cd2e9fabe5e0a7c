"""Due steps wait until the input produced before their time is applied (three hops)."""

from __future__ import annotations

from streams.runtime.applied_inputs import AppliedInputs, InvisibleTails


def test_nothing_is_applied_before_three_snapshots_are_reached() -> None:
    applied = AppliedInputs[str]()
    assert applied.update(1_000, {}) == 0
    applied.snapshot(1_000, {"orders": 5, "identity": 0, "profiles": 0})
    # The restarted worker holds the orders partition but has applied none of its backlog.
    assert applied.update(2_000, {"orders": 1}) == 0
    assert not applied.wants_snapshot()
    assert applied.update(3_000, {"orders": 4}) == 0  # first hop reached
    assert applied.wants_snapshot()
    # The orders were produced unkeyed: their identifiers live in other partitions, reached
    # over the internal identity topic as it was after the first hop.
    applied.snapshot(3_000, {"orders": 5, "identity": 3, "profiles": 0})
    assert applied.update(4_000, {"orders": 4, "identity": 1}) == 0
    assert applied.update(5_000, {"orders": 4, "identity": 2}) == 0  # second hop reached
    # Their people were merged into profiles another identifier founded elsewhere: the
    # internal profile topic as it was after the second hop is the third.
    applied.snapshot(5_000, {"orders": 5, "identity": 3, "profiles": 2})
    assert applied.update(6_000, {"orders": 4, "identity": 2, "profiles": 0}) == 0
    assert applied.update(7_000, {"orders": 4, "identity": 2, "profiles": 1}) == 1_000


def test_the_instant_follows_the_snapshots_and_never_goes_back() -> None:
    applied = AppliedInputs[int]()
    for now in range(1, 6):
        applied.update(now * 1_000, {0: 9})
        if applied.wants_snapshot():
            applied.snapshot(now * 1_000, {0: 10})
    assert applied.update(6_000, {0: 9}) == 3_000
    applied.snapshot(6_000, {0: 20})  # new input: this one is reached later
    assert applied.update(7_000, {0: 9}) == 3_000
    assert applied.update(8_000, {0: 19}) == 4_000


def test_a_snapshot_taken_before_the_last_was_reached_starts_a_new_row() -> None:
    applied = AppliedInputs[int](hops=2)
    applied.snapshot(1_000, {0: 1})
    applied.update(2_000, {0: 0})
    applied.snapshot(1_500, {0: 1})  # asked before the first was reached: not a later hop
    assert applied.update(3_000, {0: 0}) == 0
    applied.snapshot(3_000, {0: 1})
    assert applied.update(4_000, {0: 0}) == 1_500


def test_empty_partitions_are_applied_and_a_reset_forgets_everything() -> None:
    applied = AppliedInputs[int]()
    for now in (1_000, 1_500, 2_000):
        applied.snapshot(now, {0: 0, 1: 0})
        applied.update(now, {})
    assert applied.update(2_500, {}) == 1_000
    applied.reset()
    assert applied.update(3_000, {}) == 0
    assert applied.wants_snapshot()


def test_a_commit_marker_after_the_last_record_counts_once_the_position_stands_past_it() -> None:
    tails = InvisibleTails[str]()
    # Records up to 11 applied; 12 is a commit marker, so the reader's position is 13.
    assert tails.applied({"p": 11}, {"p": 11}, {"p": 13}) == {"p": 11}  # the position moved
    assert tails.applied({"p": 11}, {"p": 11}, {"p": 13}) == {"p": 12}  # and stood


def test_records_read_and_not_applied_hold_the_partition_where_it_is() -> None:
    tails = InvisibleTails[str]()
    for _ in range(3):
        assert tails.applied({"p": 11}, {"p": 12}, {"p": 14}) == {"p": 11}


def test_a_position_that_moves_again_waits_another_round() -> None:
    tails = InvisibleTails[str]()
    tails.applied({"p": 11}, {"p": 11}, {"p": 13})
    assert tails.applied({"p": 11}, {"p": 11}, {"p": 20}) == {"p": 11}
    assert tails.applied({"p": 11}, {"p": 11}, {"p": 20}) == {"p": 19}
    # Nothing read yet in this generation: the position after the committed offset counts.
    fresh = InvisibleTails[str]()
    fresh.applied({"p": 4}, {}, {"p": 7})
    assert fresh.applied({"p": 4}, {}, {"p": 7, "q": None}) == {"p": 6}
