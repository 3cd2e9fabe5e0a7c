"""Consumer lag from end offsets and Faust's read offsets."""

from __future__ import annotations

from faust.types import TP

from streams.runtime.lag import lags, partition_lag


def test_lag_is_what_lies_after_the_last_message_read() -> None:
    # Offsets 0..9 appended (end offset 10), 0..6 read: 7, 8 and 9 are unread.
    assert partition_lag(10, 6) == 3
    assert partition_lag(10, 9) == 0


def test_right_after_a_seek_to_the_committed_offset_the_lag_is_not_over_counted() -> None:
    # Faust keeps the committed offset (the next to read) after a seek: nothing unread.
    assert partition_lag(10, 10) == 0


def test_a_partition_never_read_nor_committed_lags_by_all_it_holds() -> None:
    assert partition_lag(25, None) == 25


def test_an_unknown_end_offset_gives_no_lag() -> None:
    assert partition_lag(None, 3) is None


def test_lags_of_several_partitions() -> None:
    a, b, c = TP("cdp.orders", 0), TP("cdp.orders", 1), TP("cdp.page-views", 3)
    found = lags({a: 100, b: None, c: 7}, {a: 49, c: None})
    assert found == {a: 50, c: 7}
