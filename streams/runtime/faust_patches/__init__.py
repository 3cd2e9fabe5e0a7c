"""Patches of Faust internals that correctness or latency depends on, one module per patch.

Each patch replaces one faust-streaming (or its aiokafka driver's) method or function, is
idempotent (applying it twice changes nothing) and is applied by :func:`apply` before the
app is built; its module's docstring says which failure or delay it prevents. They were
written against the faust-streaming versions in :data:`SUPPORTED_FAUST`, the range
pyproject.toml pins, and ``tests/unit/test_faust_patches.py`` holds a fingerprint of every
Faust function they replace, so an upgrade that changes one fails the suite. On any other
version the worker refuses to start instead of running patches on code they were not
checked against.
"""

from __future__ import annotations

from importlib import metadata

from streams.runtime.faust_patches.acks import commit_only_processed_messages
from streams.runtime.faust_patches.bulk_restore import restore_in_bulk
from streams.runtime.faust_patches.changelog_ends import read_changelogs_to_their_true_end
from streams.runtime.faust_patches.commits import commit_in_transactions_only
from streams.runtime.faust_patches.discovery import mark_nothing_for_discovery
from streams.runtime.faust_patches.fetch_wait import cap_fetch_wait
from streams.runtime.faust_patches.fetches import deliver_fetches_to_stages
from streams.runtime.faust_patches.seeks import read_again_after_seeks
from streams.runtime.faust_patches.table_start import start_tables_at_once

# [lowest, first not supported): keep in step with pyproject.toml's faust-streaming pin.
SUPPORTED_FAUST = ((0, 15, 2), (0, 16, 0))


class UnsupportedFaustError(RuntimeError):
    pass


def supported_range() -> str:
    low, high = SUPPORTED_FAUST
    return f">={'.'.join(map(str, low))},<{'.'.join(map(str, high[:2]))}"


def check_faust_version(installed: str | None = None) -> None:
    """Raise :class:`UnsupportedFaustError` unless ``installed`` (default: the installed
    faust-streaming) is in :data:`SUPPORTED_FAUST`."""
    version = installed or metadata.version("faust-streaming")
    try:
        parsed = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        parsed = ()
    low, high = SUPPORTED_FAUST
    if not parsed or not low <= parsed < high:
        raise UnsupportedFaustError(
            f"faust-streaming {version} is installed, but cdp-streams patches Faust internals "
            f"checked only against faust-streaming{supported_range()}: "
            f"pip install 'faust-streaming{supported_range()}'"
        )


def apply(fetch_max_wait_ms: int, exactly_once: bool = False) -> None:
    check_faust_version()
    cap_fetch_wait(fetch_max_wait_ms, read_committed=exactly_once)
    read_changelogs_to_their_true_end(read_committed=exactly_once)
    restore_in_bulk()
    start_tables_at_once()
    mark_nothing_for_discovery()
    commit_only_processed_messages()
    commit_in_transactions_only(exactly_once)
    read_again_after_seeks()
    deliver_fetches_to_stages()
