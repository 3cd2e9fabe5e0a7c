"""A table's values as a stage changes them, batch by batch: :class:`PendingWrites`.

Pure (no Faust): the worker's stages (:mod:`streams.runtime.stages`) put it in front of their
RocksDB tables, and the benchmark's in-memory core in front of dicts, so both read,
decode and write a key as often as the other does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")

Changes = dict[bytes, tuple[Any, int]]
"""Key -> (its new value, or None: deleted; its partition)."""
Put = Callable[[bytes, bytes | None, int], None]
"""Write a key's encoded value into a partition; None: delete it (a changelog tombstone)."""

# Decoded values kept after their batch, the least recently used going first. A shopper's
# events come in bursts that span fetches, and each batch is written and forgotten within
# milliseconds: without these, the next fetch read and decoded the same profile again.
RECENT_VALUES = 4096


class PendingWrites(Generic[Value]):
    """A table's values as the stage changes them: read through, written batch by batch.

    A key changed by a batch that is not written yet is served from here, and so are the
    last ``recent`` values batches were done with (until :meth:`forget_recent`); everything
    else from the table.
    """

    def __init__(
        self,
        table: Any,
        decode: Callable[[bytes], Value],
        encode: Callable[[Value], bytes],
        read: Callable[[bytes, int], bytes | None] | None = None,
        recent: int = RECENT_VALUES,
    ) -> None:
        self._table = table
        self._read = read or partition_reader(table)
        self._decode = decode
        self._encode = encode
        self._values: dict[bytes, Value | None] = {}
        self._changed: Changes = {}
        """Changed by the open batch: key -> (value, its partition)."""
        self._unwritten: dict[bytes, int] = {}
        """Changed by a sealed batch not written yet: key -> that batch's number."""
        self._sealed = 0
        self._recent: OrderedDict[bytes, Value | None] = OrderedDict()
        """Values no batch holds any more, as the table has them (see RECENT_VALUES)."""
        self._recent_size = recent

    def get(self, key: bytes, partition: int) -> Value | None:
        """The key's value; a table keeps a key in the partition of the messages about it."""
        if key not in self._values:
            if key in self._recent:
                self._values[key] = self._recent.pop(key)
            else:
                stored = self._read(key, partition)
                self._values[key] = self._decode(stored) if stored is not None else None
        return self._values[key]

    def forget_recent(self) -> None:
        """Drop the values kept after their batches: after a rebalance another worker may
        have changed them, and the table is the truth."""
        self._recent.clear()

    def set(self, key: bytes, value: Value, partition: int) -> None:
        """Change the key's value, which lives in ``partition`` (as in :meth:`get`)."""
        self._values[key] = value
        self._changed[key] = (value, partition)

    def delete(self, key: bytes, partition: int) -> None:
        """Remove the key, which lives in ``partition``: written as a tombstone."""
        self._values[key] = None
        self._changed[key] = (None, partition)

    def seal(self) -> tuple[int, Changes]:
        """The open batch's changes, to write once its sends are delivered."""
        number, changes = self._sealed, self._changed
        self._sealed += 1
        self._changed = {}
        for key in changes:
            self._unwritten[key] = number
        for key in [key for key in self._values if key not in self._unwritten]:
            self._keep_recent(key, self._values.pop(key))
        return number, changes

    def write(self, sealed: tuple[int, Changes], put: Put) -> None:
        """Write a sealed batch's changes: ``put(key, encoded value or None, partition)``."""
        number, changes = sealed
        for key, (value, partition) in changes.items():
            put(key, None if value is None else self._encode(value), partition)
            if self._unwritten.get(key) == number:
                del self._unwritten[key]
                if key not in self._changed and key in self._values:
                    self._keep_recent(key, self._values.pop(key))

    def _keep_recent(self, key: bytes, value: Value | None) -> None:
        self._recent[key] = value
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)

    @property
    def table(self) -> Any:
        return self._table


def partition_reader(table: Any) -> Callable[[bytes, int], bytes | None]:
    """Reads a key from one partition's database of a Faust table, as Faust's own reads
    do for the partition of the event being handled."""

    def read(key: bytes, partition: int) -> bytes | None:
        value: bytes | None = table.data._db_for_partition(partition).get(key)
        return value

    return read
