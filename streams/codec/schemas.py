"""The Avro schemas in ``schemas/``: loaded once, each made self-contained, fingerprinted and
compiled into a JSON check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from streams.codec.json_check import PRIMITIVE_CHECKS, Check, compile_check, fullname

SINGLE_OBJECT_MARKER = b"\xc3\x01"
NAMESPACE = "cdp"


def _inline_named_types(name: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``name``'s schema, self-contained: each named type from another file defined inline
    at its first use. Fingerprints and schema registries need one self-contained schema."""
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if isinstance(node, str):
            if node in PRIMITIVE_CHECKS:
                return node
            full = fullname(node, namespace)
            if full in defined:
                return full
            if full not in files:
                raise ValueError(f"{name}: unknown type {node!r}")
            return walk(files[full], namespace)
        node = dict(node)
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            full = fullname(node["name"], node.get("namespace", namespace))
            defined.add(full)
            if kind == "record":
                inner = full.rpartition(".")[0]
                node["fields"] = [
                    {**field, "type": walk(field["type"], inner)} for field in node["fields"]
                ]
        elif kind == "array":
            node["items"] = walk(node["items"], namespace)
        elif kind == "map":
            node["values"] = walk(node["values"], namespace)
        else:
            node["type"] = walk(kind, namespace)
        return node

    return dict(walk(files[name], ""))


def without_logical_types(node: Any) -> Any:
    # fastavro would turn timestamp-millis into datetime on every read and back on every
    # write; events carry epoch milliseconds, so the codec reads and writes plain longs.
    # The canonical form, and so the fingerprint, ignores logical types either way.
    if isinstance(node, list):
        return [without_logical_types(item) for item in node]
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    return node


def _mentions_floating_point(node: Any) -> bool:
    if isinstance(node, str):
        return node in ("float", "double")
    if isinstance(node, list):
        return any(_mentions_floating_point(item) for item in node)
    if isinstance(node, dict):
        return any(
            _mentions_floating_point(node.get(key)) for key in ("type", "items", "values")
        ) or any(_mentions_floating_point(field["type"]) for field in node.get("fields", ()))
    return False


@dataclass(frozen=True)
class RecordType:
    name: str
    schema: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    check: Check
    # Avro binary already guarantees every type but the finiteness of floating point.
    check_avro: bool

    @property
    def header(self) -> bytes:
        return SINGLE_OBJECT_MARKER + self.fingerprint


def load_record_types(schemas_dir: Path) -> dict[str, RecordType]:
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir.glob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        files[fullname(schema["name"], schema.get("namespace", ""))] = schema
    if not files:
        raise FileNotFoundError(f"no .avsc schemas in {schemas_dir}")
    types = {}
    for full in files:
        schema = _inline_named_types(full, files)
        canonical = to_parsing_canonical_form(schema)
        short = full.rpartition(".")[2]
        types[short] = RecordType(
            name=short,
            schema=schema,
            parsed=parse_schema(without_logical_types(schema)),
            fingerprint=bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO")),
            check=compile_check(schema, "", {}),
            check_avro=_mentions_floating_point(schema),
        )
    return types


def load_previous_writers(schemas_dir: Path) -> dict[bytes, tuple[str, Any]]:
    """Earlier versions of the schemas (``schemas_dir/previous/*.avsc``, each self-contained):
    their fingerprint -> (record name, parsed writer schema), so single-object records
    written with them are still read, resolved to the current schema."""
    writers: dict[bytes, tuple[str, Any]] = {}
    for path in sorted((schemas_dir / "previous").glob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        canonical = to_parsing_canonical_form(schema)
        found = bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))
        writers[found] = (schema["name"], parse_schema(without_logical_types(schema)))
    return writers
