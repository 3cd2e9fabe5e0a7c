"""RecheckSchedule: profiles' recheck instants by partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.recheck_schedule import RecheckSchedule


def test_due_rechecks_come_earliest_first_and_only_once() -> None:
    schedule = RecheckSchedule()
    schedule.set(0, "b", 20)
    schedule.set(0, "a", 10)
    schedule.set(1, "c", 15)
    assert schedule.pop_due(9) == []
    assert schedule.pop_due(15) == [(0, "a", 10), (1, "c", 15)]
    assert schedule.pop_due(15) == []
    assert len(schedule) == 1
    assert schedule.pop_due(100) == [(0, "b", 20)]
    assert len(schedule) == 0


def test_the_latest_instant_set_is_the_one_that_counts() -> None:
    schedule = RecheckSchedule()
    schedule.set(0, "a", 10)
    schedule.set(0, "a", 30)
    assert schedule.pop_due(20) == []
    schedule.set(0, "b", 5)
    schedule.set(0, "b", None)
    assert schedule.pop_due(100) == [(0, "a", 30)]


def test_a_scan_never_overrides_what_the_stage_set() -> None:
    schedule = RecheckSchedule()
    schedule.set(0, "a", 50)
    schedule.offer(0, "a", 10)  # the table's older value
    schedule.offer(0, "b", 20)
    schedule.offer(0, "c", None)
    assert schedule.pop_due(100) == [(0, "b", 20), (0, "a", 50)]


def test_partitions_no_longer_held_are_forgotten() -> None:
    schedule = RecheckSchedule()
    schedule.set(0, "a", 10)
    schedule.set(1, "b", 10)
    schedule.keep({1})
    assert schedule.pop_due(100) == [(1, "b", 10)]


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.none() | st.integers(0, 50)), max_size=400))
def test_pop_due_gives_each_profile_its_last_instant(sets: list[tuple[str, int | None]]) -> None:
    schedule = RecheckSchedule()
    last: dict[str, int | None] = {}
    for profile_id, at in sets:
        schedule.set(3, profile_id, at)
        last[profile_id] = at
    expected = sorted((at, pid) for pid, at in last.items() if at is not None)
    assert len(schedule) == len(expected)
    assert [(at, pid) for _, pid, at in schedule.pop_due(50)] == expected


def test_superseded_instants_do_not_pile_up() -> None:
    schedule = RecheckSchedule()
    for at in range(10_000):
        schedule.set(0, "a", at)
    assert len(schedule._heap[0]) <= 2 + 64
    assert schedule.pop_due(20_000) == [(0, "a", 9_999)]
