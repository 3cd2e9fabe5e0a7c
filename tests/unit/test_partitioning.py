"""Where keys live: Kafka's partitioner, and profile ids in their identifier's partition."""

from __future__ import annotations

import hashlib

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.identity.resolver import profile_id_for
from streams.partitioning import key_partition, murmur2


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
def test_keys_land_where_the_java_client_puts_them(key: bytes, java_murmur2: int) -> None:
    for partitions in (1, 8, 12):
        assert key_partition(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions


@given(st.binary(max_size=80))
def test_the_hash_is_aiokafkas(data: bytes) -> None:
    # aiokafka's places the keys Faust writes to tables and changelogs.
    assert murmur2(data) == aiokafka_murmur2(data)


@pytest.mark.parametrize("partitions", [1, 3, 8, 32])
def test_a_new_profile_lives_in_its_founding_identifiers_partition(partitions: int) -> None:
    keys = [f"anonymous_id:a-{n}" for n in range(200)] + ["email:ann@example.com", "user_id:42"]
    for key in keys:
        profile_id = profile_id_for(key, partitions)
        assert key_partition(profile_id.encode(), partitions) == key_partition(
            key.encode(), partitions
        )
    # Hashes, not the salt alone: different identifiers found different profiles.
    assert len({profile_id_for(key, partitions) for key in keys}) == len(keys)


def test_a_profile_id_is_the_plain_hash_of_its_key_where_that_lands_in_place() -> None:
    # As profile ids were before they were placed: unchanged for one partition.
    key = "email:ann@example.com"
    assert profile_id_for(key, 1) == "p_" + hashlib.sha256(key.encode()).hexdigest()[:24]
    assert profile_id_for(key, 8) == profile_id_for(key, 8)
    assert "ann" not in profile_id_for(key, 8)
