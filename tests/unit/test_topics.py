"""Key partitioning as Kafka's default partitioner does it."""

from __future__ import annotations

import pytest

from streams.topics import key_partition


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
def test_keys_land_where_the_java_client_puts_them(key: bytes, java_murmur2: int) -> None:
    for partitions in (1, 8, 12):
        assert key_partition(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions
