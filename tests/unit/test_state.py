"""Table databases are compressed with a zstd dictionary and share one cache."""

from __future__ import annotations

import gc
from pathlib import Path

import faust
from faust.stores.rocksdb import RocksDBOptions
from faust.types import TP

from streams.profiles.model import Profile
from streams.runtime.state import (
    DICTIONARY_BYTES,
    SizedRocksDBOptions,
    StateSizing,
    Store,
    store_url,
    table_options,
)
from tests.unit.test_reducer import fold, identify, order, page_view

SIZING = StateSizing(block_cache_bytes=4 * 2**20, write_buffer_bytes=2**20)


def stored_profiles(count: int) -> dict[bytes, bytes]:
    """``count`` stored profiles with different ids and contents, as the table holds them."""
    profiles = {}
    for n in range(count):
        anon, email = f"anon-{n}", f"person{n}@example.com"
        events = [
            identify({"first_name": f"Name{n}"}, "subscribed", anon=anon, email=email),
            page_view(("toys", "baking", "gifts")[n % 3], f"prod-{n % 50}", anon=anon),
            order(items=[(f"prod-{n % 50}", "toys")], total=float(n % 97), email=email),
        ]
        profile = fold(events, Profile.new(f"p_{n:024d}"))
        profiles[profile.profile_id.encode()] = profile.to_json()
    return profiles


def bytes_on_disk(options: RocksDBOptions, path: Path, profiles: dict[bytes, bytes]) -> int:
    db = options.open(path)
    for key, value in profiles.items():
        db[key] = value
    db.flush()
    db.close()
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".sst")


def test_profiles_take_far_less_disk_than_with_fausts_options(tmp_path: Path) -> None:
    profiles = stored_profiles(3_000)
    ours = bytes_on_disk(SizedRocksDBOptions(SIZING), tmp_path / "ours", profiles)
    fausts = bytes_on_disk(RocksDBOptions(use_rocksdict=True), tmp_path / "faust", profiles)
    assert ours < 0.6 * fausts


def test_values_read_back_after_reopening(tmp_path: Path) -> None:
    profiles = stored_profiles(200)
    options = SizedRocksDBOptions(SIZING)
    bytes_on_disk(options, tmp_path / "db", profiles)
    db = options.open(tmp_path / "db")
    assert {key: db[key] for key in profiles} == profiles
    db.close()


def test_databases_use_zstd_with_a_dictionary(tmp_path: Path) -> None:
    options = SizedRocksDBOptions(SIZING)
    options.open(tmp_path / "db").close()
    written = next((tmp_path / "db").glob("OPTIONS-*")).read_text()
    assert "\n  compression=kZSTD" in written
    assert f"max_dict_bytes={DICTIONARY_BYTES};" in written


def test_a_rebalance_that_revokes_none_of_its_partitions_leaves_the_store_alone(
    tmp_path: Path,
) -> None:
    app = faust.App("state-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    table = app.Table(
        "profiles",
        partitions=2,
        key_type=bytes,
        value_type=bytes,
        store=store_url("profiles"),
        options=table_options(SIZING),
    )
    store = table.data
    assert isinstance(store, Store)
    store._db_for_partition(0)
    changelog = table.changelog_topic.get_topic_name()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            collections.append(1)

    gc.callbacks.append(count)
    try:
        store.revoke_partitions(table, {TP(changelog, 1), TP("cdp.page-views", 0)})
        assert collections == []
        assert set(store._dbs) == {0}
        store.revoke_partitions(table, {TP(changelog, 0)})
        assert collections
        assert store._dbs == {}
    finally:
        gc.callbacks.remove(count)
