"""The wire format: Avro schemas from ``schemas/``, decoding and validation of input events,
encoding of events and output records.

Inputs are accepted as Avro single-object encoding, as Confluent wire format (when a schema
registry is configured) and as JSON objects validated against the same Avro schema. Whatever
cannot be decoded raises :class:`DecodeError` with a machine-readable reason, so the ingest
shell can dead-letter it. Schemas are parsed and compiled once, in :class:`Codec`'s
constructor; the per-message paths do no schema work.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from streams.events import Event, EventKind, Identity
from streams.settings import OutputFormat

if TYPE_CHECKING:
    import httpx

SINGLE_OBJECT_MARKER = b"\xc3\x01"
MAX_JSON_DEPTH = 64
# Longer values are abuse or a bug, and would bloat profiles: an identifier is also a lookup
# key (the API takes no longer ones), any other text goes into profiles and mails at most.
MAX_IDENTIFIER_CHARS = 512
MAX_TEXT_CHARS = 8192
MAX_DETAIL_CHARS = 2000
NAMESPACE = "cdp"


class DeadLetterReason(StrEnum):
    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    SCHEMA_VIOLATION = "schema_violation"
    MISSING_IDENTITY = "missing_identity"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_FINGERPRINT = "unknown_fingerprint"
    INVALID_AVRO = "invalid_avro"
    SCHEMA_REGISTRY_UNAVAILABLE = "schema_registry_unavailable"
    WRONG_RECORD_TYPE = "wrong_record_type"
    PROCESSING_ERROR = "processing_error"


class DecodeError(Exception):
    """Bytes that are not a valid record; ``detail`` is for humans and names the field."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def dead_letter_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: DeadLetterReason,
    detail: str,
    now_ms: int,
    headers: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """A ``DeadLetter`` record for :meth:`Codec.encode_record`."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value if value is not None else b"",
        "headers": {k: v.decode(errors="replace") for k, v in (headers or {}).items()},
        "reason": reason.value,
        "detail": detail[:MAX_DETAIL_CHARS],
        "occurred_at": now_ms,
    }


# --- validation -------------------------------------------------------------------------
#
# JSON input is checked by closures compiled once per schema. They return the value
# normalised to what fastavro reads from Avro (defaults filled in, unknown fields dropped,
# ints widened to float for doubles), so both input formats yield identical events.

_Check = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_JSON_TYPE_NAMES = {
    str: "string",
    int: "int",
    float: "float",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
    bytes: "bytes",
}


class _ViolationError(Exception):
    """A value that does not match the schema; ``path`` grows while the error unwinds."""

    def __init__(
        self, problem: str, reason: DeadLetterReason = DeadLetterReason.SCHEMA_VIOLATION
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.reason = reason
        self.path: list[str] = []

    def detail(self) -> str:
        path = "".join(reversed(self.path)).lstrip(".")
        return f"{path}: {self.problem}" if path else self.problem


def _got(value: Any) -> str:
    return "got " + _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_null(value: Any) -> None:
    if value is not None:
        raise _ViolationError(f"expected null, {_got(value)}")


def _check_boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise _ViolationError(f"expected boolean, {_got(value)}")
    return value


def _integer_check(name: str, bounds: tuple[int, int]) -> _Check:
    low, high = bounds

    def check(value: Any) -> int:
        # bool is an int subclass, but true is not a quantity.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _ViolationError(f"expected {name}, {_got(value)}")
        if not low <= value <= high:
            raise _ViolationError(f"{value} is out of range for {name}")
        return value

    return check


def _check_double(value: Any) -> float:
    if isinstance(value, float):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise _ViolationError("number is too large for a double") from None
    else:
        raise _ViolationError(f"expected double, {_got(value)}")
    if not math.isfinite(result):
        raise _ViolationError(f"expected a finite number, got {result}")
    return result


def _check_string(value: Any) -> str:
    if not isinstance(value, str):
        raise _ViolationError(f"expected string, {_got(value)}")
    return value


def _check_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise _ViolationError(f"expected bytes, {_got(value)}")
    return value


def _parse_iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError):
        raise _ViolationError(
            f"{_preview(text)} is not an ISO-8601 timestamp", DeadLetterReason.INVALID_TIMESTAMP
        ) from None


def _check_timestamp(value: Any) -> int:
    if isinstance(value, str):
        return _parse_iso_ms(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not _LONG_RANGE[0] <= value <= _LONG_RANGE[1]:
            raise _ViolationError(f"{value} is out of range", DeadLetterReason.INVALID_TIMESTAMP)
        return value
    raise _ViolationError(
        f"expected epoch milliseconds or an ISO-8601 string, {_got(value)}",
        DeadLetterReason.INVALID_TIMESTAMP,
    )


def _iso(epoch_ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PRIMITIVE_CHECKS: dict[str, _Check] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _integer_check("int", _INT_RANGE),
    "long": _integer_check("long", _LONG_RANGE),
    "float": _check_double,
    "double": _check_double,
    "string": _check_string,
    "bytes": _check_bytes,
}


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _record_check(fields: list[tuple[str, _Check, bool, Any]]) -> _Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _ViolationError(f"expected object, {_got(value)}")
        out: dict[str, Any] = {}
        for name, field_check, has_default, default in fields:
            if name in value:
                try:
                    out[name] = field_check(value[name])
                except _ViolationError as violation:
                    violation.path.append("." + name)
                    raise
            elif has_default:
                out[name] = copy.deepcopy(default) if isinstance(default, dict | list) else default
            else:
                missing = _ViolationError("required field is missing")
                missing.path.append("." + name)
                raise missing
        return out

    return check


def _enum_check(symbols: list[str]) -> _Check:
    allowed = frozenset(symbols)
    listing = ", ".join(symbols)

    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        got = f"got {_preview(value)}" if isinstance(value, str) else _got(value)
        raise _ViolationError(f"expected one of {listing}, {got}")

    return check


def _array_check(items: _Check) -> _Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise _ViolationError(f"expected array, {_got(value)}")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(items(item))
            except _ViolationError as violation:
                violation.path.append(f"[{index}]")
                raise
        return out

    return check


def _map_check(values: _Check) -> _Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _ViolationError(f"expected object, {_got(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _ViolationError(f"map keys must be strings, {_got(key)}")
            try:
                out[key] = values(item)
            except _ViolationError as violation:
                violation.path.append(f"[{json.dumps(key)}]")
                raise
        return out

    return check


def _union_check(branches: list[_Check]) -> _Check:
    if len(branches) == 2 and branches[0] is _check_null:
        inner = branches[1]

        def optional(value: Any) -> Any:
            return None if value is None else inner(value)

        return optional

    def check(value: Any) -> Any:
        failures = []
        for branch in branches:
            try:
                return branch(value)
            except _ViolationError as violation:
                failures.append(violation.problem)
        raise _ViolationError("matches no branch of the union: " + "; ".join(failures))

    return check


def _compile(schema: Any, namespace: str, named: dict[str, _Check]) -> _Check:
    if isinstance(schema, list):
        return _union_check([_compile(branch, namespace, named) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVE_CHECKS:
            return _PRIMITIVE_CHECKS[schema]
        return named[_fullname(schema, namespace)]
    kind = schema["type"]
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return _check_timestamp
    if kind == "record":
        name = _fullname(schema["name"], schema.get("namespace", namespace))
        inner_namespace = name.rpartition(".")[0]
        fields = [
            (
                field["name"],
                _compile(field["type"], inner_namespace, named),
                "default" in field,
                field.get("default"),
            )
            for field in schema["fields"]
        ]
        named[name] = _record_check(fields)
        return named[name]
    if kind == "enum":
        name = _fullname(schema["name"], schema.get("namespace", namespace))
        named[name] = _enum_check(schema["symbols"])
        return named[name]
    if kind == "array":
        return _array_check(_compile(schema["items"], namespace, named))
    if kind == "map":
        return _map_check(_compile(schema["values"], namespace, named))
    if kind == "fixed":
        raise ValueError("fixed types are not supported")
    return _compile(kind, namespace, named)


# --- schema loading ---------------------------------------------------------------------


def _inline_named_types(name: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``name``'s schema, self-contained: each named type from another file defined inline
    at its first use. Fingerprints and schema registries need one self-contained schema."""
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if isinstance(node, str):
            if node in _PRIMITIVE_CHECKS:
                return node
            full = _fullname(node, namespace)
            if full in defined:
                return full
            if full not in files:
                raise ValueError(f"{name}: unknown type {node!r}")
            return walk(files[full], namespace)
        node = dict(node)
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            full = _fullname(node["name"], node.get("namespace", namespace))
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


def _without_logical_types(node: Any) -> Any:
    # fastavro would turn timestamp-millis into datetime on every read and back on every
    # write; events carry epoch milliseconds, so the codec reads and writes plain longs.
    # The canonical form, and so the fingerprint, ignores logical types either way.
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
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
class _RecordType:
    name: str
    schema: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    check: _Check
    # Avro binary already guarantees every type but the finiteness of floating point.
    check_avro: bool

    @property
    def header(self) -> bytes:
        return SINGLE_OBJECT_MARKER + self.fingerprint


def _load_record_types(schemas_dir: Path) -> dict[str, _RecordType]:
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir.glob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        files[_fullname(schema["name"], schema.get("namespace", ""))] = schema
    if not files:
        raise FileNotFoundError(f"no .avsc schemas in {schemas_dir}")
    types = {}
    for full in files:
        schema = _inline_named_types(full, files)
        canonical = to_parsing_canonical_form(schema)
        short = full.rpartition(".")[2]
        types[short] = _RecordType(
            name=short,
            schema=schema,
            parsed=parse_schema(_without_logical_types(schema)),
            fingerprint=bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO")),
            check=_compile(schema, "", {}),
            check_avro=_mentions_floating_point(schema),
        )
    return types


# --- JSON helpers -----------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_depth(text: str) -> int:
    """Nesting depth of valid JSON text, without recursion."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            DeadLetterReason.INVALID_UTF8, f"byte {exc.start} is not valid UTF-8"
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        value = None
        depth_exceeded = True
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers over 4300 digits
        raise DecodeError(DeadLetterReason.INVALID_JSON, str(exc)[:200]) from None
    else:
        # A depth limit independent of the caller's stack makes the verdict on the same
        # bytes the same everywhere; the cheap count skips the scan for ordinary events.
        depth_exceeded = (
            text.count("[") + text.count("{") > MAX_JSON_DEPTH
            and _json_depth(text) > MAX_JSON_DEPTH
        )
    if depth_exceeded:
        raise DecodeError(
            DeadLetterReason.INVALID_JSON, f"nested deeper than {MAX_JSON_DEPTH} levels"
        )
    # json.loads accepts "\ud800" escapes; a lone surrogate could never be encoded again
    # (Avro output, UTF-8 logs), so it would poison whichever stage touched it next.
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(
                DeadLetterReason.INVALID_UTF8, "a \\u escape encodes a lone surrogate"
            ) from None
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Output records whose JSON form differs from their Avro form (see the schemas' docs).
_JSON_OBJECT_FIELDS = {"JourneyTrigger": ("payload",)}
_BASE64_FIELDS = {"DeadLetter": ("key", "value")}


def _json_to_avro_shape(record_name: str, obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for name in _JSON_OBJECT_FIELDS.get(record_name, ()):
        if name in out:
            out[name] = json.dumps(out[name], separators=(",", ":"), sort_keys=True)
    for name in _BASE64_FIELDS.get(record_name, ()):
        if isinstance(out.get(name), str):
            try:
                out[name] = base64.b64decode(out[name], validate=True)
            except (binascii.Error, ValueError):
                raise DecodeError(
                    DeadLetterReason.SCHEMA_VIOLATION, f"{name}: not a base64 string"
                ) from None
    return out


# --- the codec --------------------------------------------------------------------------


class Codec:
    """Every schema in ``schemas_dir``, parsed once; decodes inputs and encodes outputs."""

    def __init__(
        self,
        schemas_dir: Path,
        *,
        max_event_bytes: int = 1_048_576,
        schema_registry_url: str | None = None,
        future_tolerance_ms: int = 86_400_000,
    ) -> None:
        self._types = _load_record_types(Path(schemas_dir))
        missing = [kind.schema_name for kind in EventKind if kind.schema_name not in self._types]
        if missing:
            raise FileNotFoundError(f"{schemas_dir} lacks schemas for {', '.join(missing)}")
        self._inputs = {kind: self._types[kind.schema_name] for kind in EventKind}
        self._by_fingerprint = {rtype.fingerprint: rtype.name for rtype in self._types.values()}
        self._max_event_bytes = max_event_bytes
        self._future_tolerance_ms = future_tolerance_ms
        self._registry_url = schema_registry_url.rstrip("/") if schema_registry_url else None
        self._registry: httpx.Client | None = None
        self._writer_schemas: dict[int, Any] = {}

    # -- inputs

    def decode(self, kind: EventKind, value: bytes | None, *, now_ms: int | None = None) -> Event:
        """Decode and validate one input message of ``kind``; raises :class:`DecodeError`."""
        if not value:
            raise DecodeError(DeadLetterReason.EMPTY_PAYLOAD, "the message has no value")
        if len(value) > self._max_event_bytes:
            raise DecodeError(
                DeadLetterReason.PAYLOAD_TOO_LARGE,
                f"{len(value)} bytes exceeds the limit of {self._max_event_bytes}",
            )
        rtype = self._inputs[kind]
        if value[:2] == SINGLE_OBJECT_MARKER:
            record = self._read_single_object(rtype, value)
        elif value[0] == 0 and len(value) >= 5:
            record = self._read_confluent(rtype, value)
        else:
            record = self._read_json_event(rtype, value)
        return self._to_event(
            kind, record, time.time_ns() // 1_000_000 if now_ms is None else now_ms
        )

    def _read_json_event(self, rtype: _RecordType, value: bytes) -> dict[str, Any]:
        obj = _parse_json(value)
        if not isinstance(obj, dict):
            raise DecodeError(
                DeadLetterReason.NOT_AN_OBJECT, f"expected a JSON object, {_got(obj)}"
            )
        if obj.get("identity") is None:
            raise DecodeError(DeadLetterReason.MISSING_IDENTITY, "identity is missing")
        return self._check(rtype, obj)

    def _to_event(self, kind: EventKind, record: dict[str, Any], now: int) -> Event:
        event_id = record.pop("event_id")
        occurred_at = record.pop("occurred_at")
        identity = _normalise_identity(record.pop("identity"))
        if not event_id.strip():
            raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, "event_id: must not be empty")
        _check_text_lengths(event_id, "event_id")
        _check_text_lengths(record, "")
        if occurred_at < 0:
            raise DecodeError(
                DeadLetterReason.INVALID_TIMESTAMP, f"occurred_at: {occurred_at} is before 1970"
            )
        if occurred_at > now + self._future_tolerance_ms:
            raise DecodeError(
                DeadLetterReason.INVALID_TIMESTAMP,
                f"occurred_at: {occurred_at} is more than {self._future_tolerance_ms} ms "
                "in the future",
            )
        return Event(kind, event_id, occurred_at, identity, record)

    def _read_single_object(self, rtype: _RecordType, data: bytes) -> dict[str, Any]:
        if len(data) < 10:
            raise DecodeError(DeadLetterReason.INVALID_AVRO, "single-object header is truncated")
        found = data[2:10]
        if found != rtype.fingerprint:
            other = self._by_fingerprint.get(found)
            if other is not None:
                raise DecodeError(
                    DeadLetterReason.WRONG_RECORD_TYPE,
                    f"expected a {NAMESPACE}.{rtype.name} record, got {NAMESPACE}.{other}",
                )
            raise DecodeError(
                DeadLetterReason.UNKNOWN_FINGERPRINT,
                f"fingerprint {found.hex()} matches no schema (expected "
                f"{rtype.fingerprint.hex()} for {NAMESPACE}.{rtype.name})",
            )
        return self._read_avro(rtype, data, 10, rtype.parsed, None)

    def _read_confluent(self, rtype: _RecordType, data: bytes) -> dict[str, Any]:
        schema_id = int.from_bytes(data[1:5], "big")
        if self._registry_url is None:
            raise DecodeError(
                DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
                f"Confluent wire format (schema id {schema_id}) needs a schema registry, "
                "but CDP_SCHEMA_REGISTRY_URL is unset",
            )
        writer = self._writer_schema(schema_id)
        writer_name = writer.get("name") if isinstance(writer, dict) else None
        if writer_name != f"{NAMESPACE}.{rtype.name}" and writer_name in {
            f"{NAMESPACE}.{name}" for name in self._types
        }:
            raise DecodeError(
                DeadLetterReason.WRONG_RECORD_TYPE,
                f"schema id {schema_id} is {writer_name}, expected {NAMESPACE}.{rtype.name}",
            )
        return self._read_avro(rtype, data, 5, writer, rtype.parsed)

    def _read_avro(
        self, rtype: _RecordType, data: bytes, start: int, writer: Any, reader: Any
    ) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        buffer.seek(start)
        try:
            record = fastavro.schemaless_reader(buffer, writer, reader)
        except SchemaResolutionError as exc:
            raise DecodeError(
                DeadLetterReason.SCHEMA_VIOLATION,
                f"writer schema does not resolve to {NAMESPACE}.{rtype.name}: {exc}",
            ) from None
        # Corrupt bytes surface from fastavro as many exception types (EOFError,
        # IndexError, UnicodeDecodeError, ValueError, ...); all mean the same here.
        except Exception as exc:
            raise DecodeError(
                DeadLetterReason.INVALID_AVRO,
                f"cannot read a {NAMESPACE}.{rtype.name}: {type(exc).__name__}: {exc}"[:300],
            ) from None
        if buffer.tell() != len(data):
            raise DecodeError(
                DeadLetterReason.INVALID_AVRO,
                f"{len(data) - buffer.tell()} bytes left over after the record",
            )
        if not isinstance(record, dict):
            raise DecodeError(DeadLetterReason.INVALID_AVRO, "the writer schema is not a record")
        return self._check(rtype, record) if rtype.check_avro else record

    def _writer_schema(self, schema_id: int) -> Any:
        cached = self._writer_schemas.get(schema_id)
        if cached is not None:
            return cached
        # Blocking, but once per schema id for the life of the process.
        import httpx  # here, not at the top: most workers never ask a registry

        if self._registry is None:
            self._registry = httpx.Client(base_url=self._registry_url or "", timeout=5.0)
        try:
            response = self._registry.get(f"/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise DecodeError(
                DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
                f"schema registry request for id {schema_id} failed: {exc!r}",
            ) from None
        if response.status_code == 404:
            raise DecodeError(
                DeadLetterReason.UNKNOWN_FINGERPRINT,
                f"schema id {schema_id} is not in the schema registry",
            )
        if response.status_code != 200:
            raise DecodeError(
                DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
                f"schema registry answered {response.status_code} for schema id {schema_id}",
            )
        try:
            body = response.json()
            schema_type = body.get("schemaType", "AVRO")
            if schema_type != "AVRO":
                raise ValueError(f"it is a {schema_type} schema")
            parsed = parse_schema(_without_logical_types(json.loads(body["schema"])))
        except Exception as exc:  # whatever the registry holds, it is not a usable schema
            raise DecodeError(
                DeadLetterReason.INVALID_AVRO,
                f"schema id {schema_id} is not a usable Avro schema: {exc}"[:300],
            ) from None
        self._writer_schemas[schema_id] = parsed
        return parsed

    # -- outputs and events

    def encode_event(self, event: Event, fmt: OutputFormat = OutputFormat.AVRO) -> bytes:
        """An input event as a producer sends it; raises ValueError if it breaks the schema."""
        rtype = self._inputs[event.kind]
        record = {
            "event_id": event.event_id,
            "occurred_at": event.occurred_at,
            "identity": event.identity.to_dict(),
            **event.body,
        }
        checked = self._check_output(rtype, record)
        if fmt is OutputFormat.AVRO:
            return self._write(rtype, checked)
        checked["occurred_at"] = _iso(checked["occurred_at"])
        return _dumps(checked)

    def encode_record(
        self, record_name: str, record: Mapping[str, Any], fmt: OutputFormat
    ) -> bytes:
        """An output record; raises ValueError if it breaks the schema.

        JSON is compact; ``occurred_at`` stays epoch milliseconds, bytes become base64
        strings and JourneyTrigger's ``payload`` is a JSON object (a JSON string in Avro).
        """
        rtype = self._record_type(record_name)
        avro_shape = dict(record)
        for name in _JSON_OBJECT_FIELDS.get(rtype.name, ()):
            if not isinstance(record.get(name), Mapping):
                raise ValueError(f"{NAMESPACE}.{rtype.name}: {name}: expected a mapping")
            avro_shape[name] = json.dumps(record[name], separators=(",", ":"))
        checked = self._check_output(rtype, avro_shape)
        if fmt is OutputFormat.AVRO:
            return self._write(rtype, checked)
        for name in _JSON_OBJECT_FIELDS.get(rtype.name, ()):
            checked[name] = record.get(name)
        for name in _BASE64_FIELDS.get(rtype.name, ()):
            if checked[name] is not None:
                checked[name] = base64.b64encode(checked[name]).decode("ascii")
        return _dumps(checked)

    def decode_record(self, record_name: str, data: bytes) -> dict[str, Any]:
        """Inverse of :meth:`encode_record`, for either format; raises :class:`DecodeError`."""
        rtype = self._record_type(record_name)
        if data[:2] == SINGLE_OBJECT_MARKER:
            record = self._read_single_object(rtype, data)
        else:
            obj = _parse_json(data)
            if not isinstance(obj, dict):
                raise DecodeError(
                    DeadLetterReason.NOT_AN_OBJECT, f"expected a JSON object, {_got(obj)}"
                )
            record = self._check(rtype, _json_to_avro_shape(rtype.name, obj))
        for name in _JSON_OBJECT_FIELDS.get(rtype.name, ()):
            try:
                record[name] = json.loads(record[name])
            except ValueError:
                raise DecodeError(
                    DeadLetterReason.SCHEMA_VIOLATION, f"{name}: not a JSON document"
                ) from None
        return record

    def fingerprint(self, record_name: str) -> bytes:
        """CRC-64-AVRO of the parsing canonical form, 8 bytes little-endian (Avro spec)."""
        return self._record_type(record_name).fingerprint

    def schema(self, record_name: str) -> dict[str, Any]:
        """The self-contained Avro schema (e.g. to register it with a schema registry)."""
        return copy.deepcopy(self._record_type(record_name).schema)

    def _record_type(self, record_name: str) -> _RecordType:
        short = record_name.removeprefix(f"{NAMESPACE}.")
        try:
            return self._types[short]
        except KeyError:
            raise ValueError(f"no schema for record {record_name!r}") from None

    @staticmethod
    def _check(rtype: _RecordType, value: Any) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = rtype.check(value)
        except _ViolationError as violation:
            raise DecodeError(violation.reason, violation.detail()) from None
        return checked

    @staticmethod
    def _check_output(rtype: _RecordType, value: Any) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = rtype.check(value)
        except _ViolationError as violation:
            raise ValueError(f"{NAMESPACE}.{rtype.name}: {violation.detail()}") from None
        return checked

    @staticmethod
    def _write(rtype: _RecordType, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(rtype.header)
        fastavro.schemaless_writer(buffer, rtype.parsed, record)
        return buffer.getvalue()


def _clean_identifier(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def _normalise_identity(raw: dict[str, Any]) -> Identity:
    email = _clean_identifier(raw["email"])
    identity = Identity(
        anonymous_id=_clean_identifier(raw["anonymous_id"]),
        user_id=_clean_identifier(raw["user_id"]),
        email=email.lower() if email else None,
    )
    if identity.anonymous_id is None and identity.user_id is None and identity.email is None:
        raise DecodeError(
            DeadLetterReason.MISSING_IDENTITY,
            "identity: needs at least one non-empty anonymous_id, user_id or email",
        )
    for kind, value in identity.identifiers():
        if len(value) > MAX_IDENTIFIER_CHARS:
            raise DecodeError(
                DeadLetterReason.SCHEMA_VIOLATION,
                f"identity.{kind.value}: longer than {MAX_IDENTIFIER_CHARS} characters",
            )
    return identity


def _check_text_lengths(value: Any, path: str) -> None:
    """Every string in an event body is at most :data:`MAX_TEXT_CHARS` long."""
    # Nearly every event passes: look for a long string first, and build the path of one
    # (a string per item) only once there is one to report.
    if not _has_long_text(value):
        return
    _report_long_text(value, path)


def _has_long_text(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) > MAX_TEXT_CHARS
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_TEXT_CHARS or _has_long_text(item):
                return True
    elif isinstance(value, list):
        for item in value:
            if _has_long_text(item):
                return True
    return False


def _report_long_text(value: Any, path: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            raise DecodeError(
                DeadLetterReason.SCHEMA_VIOLATION,
                f"{path}: longer than {MAX_TEXT_CHARS} characters",
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _report_long_text(key, f"{path} key")
            _report_long_text(item, f"{path}[{key!r}]" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _report_long_text(item, f"{path}[{index}]")
