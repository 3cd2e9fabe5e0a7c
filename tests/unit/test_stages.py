"""PendingWrites: what a stage reads while batches it sealed are not written yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.stages import PendingWrites, key_partition


class Message:
    """Stands for the Faust event a value was changed by."""


def pending(table: dict[bytes, bytes]) -> PendingWrites[str]:
    def read(key: bytes, _partition: int) -> bytes | None:
        return table.get(key)

    return PendingWrites(table, bytes.decode, str.encode, read)


def into(table: dict[bytes, bytes]) -> Callable[[bytes, bytes, Any], None]:
    def put(key: bytes, value: bytes, _item: Any) -> None:
        table[key] = value

    return put


def test_a_value_is_read_from_the_table_once_per_batch() -> None:
    table = {b"k": b"stored"}
    writes = pending(table)
    assert writes.get(b"k", 0) == "stored"
    table[b"k"] = b"changed by nobody we know"
    assert writes.get(b"k", 0) == "stored"
    writes.seal()
    # Read-only values are not kept past their batch.
    assert writes.get(b"k", 0) == "changed by nobody we know"
    assert writes.get(b"missing", 0) is None


def test_a_sealed_change_is_served_until_written_and_then_stored() -> None:
    table: dict[bytes, bytes] = {}
    writes = pending(table)
    writes.set(b"k", "one", Message())
    first = writes.seal()
    assert writes.get(b"k", 0) == "one"
    assert table == {}
    writes.write(first, into(table))
    assert table == {b"k": b"one"}
    assert writes.get(b"k", 0) == "one"


def test_writing_an_older_batch_keeps_the_newer_value() -> None:
    table: dict[bytes, bytes] = {}
    writes = pending(table)
    writes.set(b"k", "one", Message())
    first = writes.seal()
    writes.set(b"k", "two", Message())
    second = writes.seal()
    writes.set(b"k", "three", Message())  # the open batch
    writes.write(first, into(table))
    assert table[b"k"] == b"one"
    assert writes.get(b"k", 0) == "three"
    writes.write(second, into(table))
    assert table[b"k"] == b"two"
    assert writes.get(b"k", 0) == "three"
    writes.write(writes.seal(), into(table))
    assert table[b"k"] == b"three"


def test_each_changed_key_is_written_once_per_batch() -> None:
    class CountingTable(dict[bytes, bytes]):
        writes = 0

        def __setitem__(self, key: bytes, value: bytes) -> None:
            CountingTable.writes += 1
            super().__setitem__(key, value)

    table = CountingTable()
    writes = pending(table)
    for value in ("a", "b", "c"):
        writes.set(b"k", value, Message())
    writes.set(b"other", "x", Message())
    writes.write(writes.seal(), into(table))
    assert CountingTable.writes == 2
    assert table == {b"k": b"c", b"other": b"x"}


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
def test_keys_land_where_the_java_client_puts_them(key: bytes, java_murmur2: int) -> None:
    for partitions in (1, 8, 12):
        assert key_partition(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions
