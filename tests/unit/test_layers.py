"""The layering rule of ``streams/``, checked on the import graph of the sources.

Arrows point down only: shared vocabulary <- pure domains <- steps <- runtime <- api/cli/demo.
A domain imports another only through the vocabulary or ``streams.profiles.model`` (the
profile's data), and nothing below the runtime imports Faust, Kafka clients or RocksDB.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streams"

VOCABULARY = 0
DOMAIN = 1
STEPS = 2
RUNTIME = 3
TOP = 4

LAYER_NAMES = {VOCABULARY: "vocabulary", DOMAIN: "domain", STEPS: "steps", RUNTIME: "runtime"}
LAYER_NAMES[TOP] = "api/cli"

# collector: the pure mapping of Segment messages to events (its HTTP process is in api/).
DOMAINS = ("identity", "profiles", "segments", "journeys", "privacy", "collector")
SHARED_DOMAIN_MODULES = ("streams.profiles.model",)
# I/O and framework packages the pure layers must not touch (the codec's schema-registry
# client is the one vocabulary module that talks to a server, and it is named here).
IMPURE = ("faust", "mode", "aiokafka", "confluent_kafka", "rocksdict", "httpx", "aiohttp")
IMPURE_ALLOWED = {"streams.codec.registry": ("confluent_kafka",)}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return TOP
    head = parts[1]
    if head in DOMAINS:
        return DOMAIN
    if head == "steps":
        return STEPS
    if head == "runtime":
        return RUNTIME
    if head in ("api", "cli", "demo", "producer", "__main__"):
        return TOP
    return VOCABULARY


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at the top or inside functions (TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def modules() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = set(imports_of(path))
    known = set(graph)
    # ``from streams.runtime import stages`` names a module; ``from x import Name`` does not.
    return {
        name: {imported for imported in targets if imported in known or _top(imported) in IMPURE}
        for name, targets in graph.items()
    }


def _top(module: str) -> str:
    return module.split(".")[0]


def _domain(module: str) -> str:
    return module.split(".")[1]


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        layer = layer_of(module)
        for target in sorted(targets):
            if _top(target) in IMPURE:
                allowed = IMPURE_ALLOWED.get(module, ())
                if layer < RUNTIME and _top(target) not in allowed:
                    found.append(f"{module} ({LAYER_NAMES[layer]}) imports {target}")
                continue
            target_layer = layer_of(target)
            if target_layer > layer:
                found.append(
                    f"{module} ({LAYER_NAMES[layer]}) imports {target} "
                    f"({LAYER_NAMES[target_layer]})"
                )
            elif (
                layer == DOMAIN
                and target_layer == DOMAIN
                and _domain(target) != _domain(module)
                and target not in SHARED_DOMAIN_MODULES
            ):
                found.append(f"{module} imports another domain's {target}")
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_the_layers() -> None:
    assert layering_violations(modules()) == []


def test_no_import_circles() -> None:
    assert circles(modules()) == []


@pytest.mark.parametrize(
    ("module", "target", "broken"),
    [
        ("streams.profiles.reducer", "streams.runtime.stages", True),
        ("streams.segments.evaluator", "faust", True),
        ("streams.journeys.rules", "streams.segments.evaluator", True),
        ("streams.journeys.rules", "streams.profiles.model", False),
        ("streams.steps.engine", "streams.runtime.pending", True),
        ("streams.runtime.pipeline", "streams.steps.engine", False),
        ("streams.settings", "streams.identity.resolver", True),
        ("streams.api.views", "streams.runtime.app", False),
        ("streams.codec.registry", "confluent_kafka", False),
    ],
)
def test_the_check_sees_a_broken_rule(module: str, target: str, broken: bool) -> None:
    assert bool(layering_violations({module: {target}})) is broken


def test_the_check_sees_a_circle() -> None:
    graph = {"streams.a": {"streams.b"}, "streams.b": {"streams.c"}, "streams.c": {"streams.a"}}
    assert circles(graph) == [["streams.a", "streams.b", "streams.c"]]
