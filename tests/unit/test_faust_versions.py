"""The Faust internals the patches replace are the ones they were written against.

Every function a module of :mod:`streams.runtime.faust_patches` replaces is fingerprinted
here as faust-streaming 0.15.3 defines it. A faust-streaming release that changes one of
them fails this test, naming the function: read the new code, adapt the patch, and take the
new fingerprint (``python -m tests.unit.test_faust_versions`` prints them).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect

import pytest

from streams.runtime.faust_patches import (
    UnsupportedFaustError,
    check_faust_version,
    supported_range,
)

# (module, class or None, function) where Faust defines it -> sha256 of its source, 12 hex.
REPLACED = {
    (
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_create_worker_consumer",
    ): "684c167041ff",
    ("faust.tables.recovery", "Recovery", "_build_highwaters"): "881584f42842",
    ("faust.tables.manager", "TableManager", "on_start"): "5e67c90893df",
    ("faust.transport.consumer", "Consumer", "ack"): "6341c682b9ca",
    ("faust.transport.consumer", "Consumer", "_drain_messages"): "8308d11bc7a2",
    ("faust.transport.consumer", "ThreadDelegateConsumer", "_getmany"): "2b6672f6c3c5",
    ("faust.transport.consumer", "ThreadDelegateConsumer", "_commit"): "894c0a0af4ae",
    ("faust.transport.consumer", "Consumer", "getmany"): "fb4700d31489",
    # Read by the restricted fetch of the topics read first (its partitions come from here).
    ("faust.transport.consumer", "Consumer", "_wait_next_records"): "97fc2cf4cf94",
    ("faust.transport.consumer", "Consumer", "seek"): "52c40ac02ed6",
    ("faust.transport.consumer", "Consumer", "perform_seek"): "b2fa31dd2a87",
    ("faust.utils.venusian", None, "attach"): "7b40706358e2",
}


def fingerprint(module: str, owner: str | None, name: str) -> str:
    """The function's source as the installed file has it, patched or not in this process."""
    source = inspect.getsource(importlib.import_module(module))
    tree = ast.parse(source)
    scope: list[ast.stmt] = tree.body
    if owner is not None:
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner]
        assert classes, f"{module} no longer defines {owner}"
        scope = classes[0].body
    functions = [
        n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    ]
    assert functions, f"{module}.{owner or ''}.{name} is gone"
    segment = ast.get_source_segment(source, functions[0]) or ""
    return hashlib.sha256(segment.encode()).hexdigest()[:12]


@pytest.mark.parametrize(("where", "expected"), list(REPLACED.items()))
def test_replaced_faust_code_is_as_the_patch_was_written_for(
    where: tuple[str, str | None, str], expected: str
) -> None:
    assert fingerprint(*where) == expected, f"{'.'.join(p for p in where if p)} changed"


def test_the_installed_faust_is_supported() -> None:
    check_faust_version()


@pytest.mark.parametrize("version", ["0.11.0", "0.15.1", "0.16.0", "1.0.0", "dev"])
def test_other_faust_versions_are_refused_with_the_range(version: str) -> None:
    with pytest.raises(UnsupportedFaustError) as refused:
        check_faust_version(version)
    assert version in str(refused.value)
    assert supported_range() in str(refused.value)


if __name__ == "__main__":
    for where in REPLACED:
        print(where, fingerprint(*where))
