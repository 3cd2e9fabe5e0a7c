"""PendingWrites: what a stage reads while batches it sealed are not written yet."""

from __future__ import annotations

from streams.runtime.pending import PendingWrites, Put


def pending(table: dict[bytes, bytes]) -> PendingWrites[str]:
    def read(key: bytes, _partition: int) -> bytes | None:
        return table.get(key)

    return PendingWrites(table, bytes.decode, str.encode, read)


def into(table: dict[bytes, bytes]) -> Put:
    def put(key: bytes, value: bytes | None, _partition: int) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    return put


def counting(table: dict[bytes, bytes], recent: int = 8) -> tuple[PendingWrites[str], list[bytes]]:
    reads: list[bytes] = []

    def read(key: bytes, _partition: int) -> bytes | None:
        reads.append(key)
        return table.get(key)

    return PendingWrites(table, bytes.decode, str.encode, read, recent=recent), reads


def test_a_value_is_read_from_the_table_once_until_a_rebalance() -> None:
    table = {b"k": b"stored"}
    writes, reads = counting(table)
    assert writes.get(b"k", 0) == "stored"
    table[b"k"] = b"changed by nobody we know"
    assert writes.get(b"k", 0) == "stored"
    writes.seal()
    # Kept past its batch: only this stage writes the partition while it holds it.
    assert writes.get(b"k", 0) == "stored"
    assert writes.get(b"missing", 0) is None
    writes.seal()
    assert writes.get(b"missing", 0) is None
    assert reads == [b"k", b"missing"]
    writes.forget_recent()  # what a stage does once the consumer generation changed
    assert writes.get(b"k", 0) == "changed by nobody we know"
    assert reads == [b"k", b"missing", b"k"]


def test_written_values_are_kept_as_written_and_the_oldest_go_first() -> None:
    table: dict[bytes, bytes] = {}
    writes, reads = counting(table, recent=2)
    for key in (b"a", b"b", b"c"):
        writes.set(key, key.decode() * 2, 0)
        writes.write(writes.seal(), into(table))
    # "a" was the least recently used of three kept values, two at most.
    assert [writes.get(key, 0) for key in (b"c", b"b", b"a")] == ["cc", "bb", "aa"]
    assert reads == [b"a"]
    writes.seal()
    assert writes.get(b"c", 0) == "cc"  # "c" went out when "a" came back
    assert reads == [b"a", b"c"]


def test_a_sealed_change_is_served_until_written_and_then_stored() -> None:
    table: dict[bytes, bytes] = {}
    writes = pending(table)
    writes.set(b"k", "one", 0)
    first = writes.seal()
    assert writes.get(b"k", 0) == "one"
    assert table == {}
    writes.write(first, into(table))
    assert table == {b"k": b"one"}
    assert writes.get(b"k", 0) == "one"


def test_writing_an_older_batch_keeps_the_newer_value() -> None:
    table: dict[bytes, bytes] = {}
    writes = pending(table)
    writes.set(b"k", "one", 0)
    first = writes.seal()
    writes.set(b"k", "two", 0)
    second = writes.seal()
    writes.set(b"k", "three", 0)  # the open batch
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
        writes.set(b"k", value, 0)
    writes.set(b"other", "x", 0)
    writes.write(writes.seal(), into(table))
    assert CountingTable.writes == 2
    assert table == {b"k": b"c", b"other": b"x"}


def test_a_deleted_key_is_gone_at_once_and_written_as_a_tombstone() -> None:
    table = {b"k": b"stored"}
    writes = pending(table)
    written: list[tuple[bytes, bytes | None, int]] = []
    writes.delete(b"k", 3)
    assert writes.get(b"k", 3) is None
    writes.write(
        writes.seal(), lambda key, value, partition: written.append((key, value, partition))
    )
    assert written == [(b"k", None, 3)]
    assert writes.get(b"k", 3) is None
