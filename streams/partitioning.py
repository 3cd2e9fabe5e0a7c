"""Which partition a key lives in: Kafka's default partitioner, as every part here uses it.

The producer API, the worker's sender and Faust's tables all place a key with murmur2 (the
Java clients' default), so a key's partition is the same on every topic with the same
number of partitions, and any worker can tell whether it holds a key without asking.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Java's) gives ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


# Cached: the hash is pure Python (about 6 µs), and the same identifiers come back.
key_partition = functools.lru_cache(maxsize=2**16)(partition_of)
