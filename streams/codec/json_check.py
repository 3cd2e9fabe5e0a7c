"""JSON input checked against the Avro schemas, and the JSON forms of records.

JSON input is checked by closures compiled once per schema. They return the value
normalised to what fastavro reads from Avro (defaults filled in, unknown fields dropped,
ints widened to float for doubles), so both input formats yield identical events.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from streams.codec.errors import MAX_JSON_DEPTH, DeadLetterReason, DecodeError

Check = Callable[[Any], Any]

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


class ViolationError(Exception):
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


def got(value: Any) -> str:
    return "got " + _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_null(value: Any) -> None:
    if value is not None:
        raise ViolationError(f"expected null, {got(value)}")


def _check_boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise ViolationError(f"expected boolean, {got(value)}")
    return value


def _integer_check(name: str, bounds: tuple[int, int]) -> Check:
    low, high = bounds

    def check(value: Any) -> int:
        # bool is an int subclass, but true is not a quantity.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ViolationError(f"expected {name}, {got(value)}")
        if not low <= value <= high:
            raise ViolationError(f"{value} is out of range for {name}")
        return value

    return check


def _check_double(value: Any) -> float:
    if isinstance(value, float):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise ViolationError("number is too large for a double") from None
    else:
        raise ViolationError(f"expected double, {got(value)}")
    if not math.isfinite(result):
        raise ViolationError(f"expected a finite number, got {result}")
    return result


def _check_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ViolationError(f"expected string, {got(value)}")
    return value


def _check_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ViolationError(f"expected bytes, {got(value)}")
    return value


def _parse_iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError):
        raise ViolationError(
            f"{_preview(text)} is not an ISO-8601 timestamp", DeadLetterReason.INVALID_TIMESTAMP
        ) from None


def _check_timestamp(value: Any) -> int:
    if isinstance(value, str):
        return _parse_iso_ms(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not _LONG_RANGE[0] <= value <= _LONG_RANGE[1]:
            raise ViolationError(f"{value} is out of range", DeadLetterReason.INVALID_TIMESTAMP)
        return value
    raise ViolationError(
        f"expected epoch milliseconds or an ISO-8601 string, {got(value)}",
        DeadLetterReason.INVALID_TIMESTAMP,
    )


def iso(epoch_ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


PRIMITIVE_CHECKS: dict[str, Check] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _integer_check("int", _INT_RANGE),
    "long": _integer_check("long", _LONG_RANGE),
    "float": _check_double,
    "double": _check_double,
    "string": _check_string,
    "bytes": _check_bytes,
}


def fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _record_check(fields: list[tuple[str, Check, bool, Any]]) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ViolationError(f"expected object, {got(value)}")
        out: dict[str, Any] = {}
        for name, field_check, has_default, default in fields:
            if name in value:
                try:
                    out[name] = field_check(value[name])
                except ViolationError as violation:
                    violation.path.append("." + name)
                    raise
            elif has_default:
                out[name] = copy.deepcopy(default) if isinstance(default, dict | list) else default
            else:
                missing = ViolationError("required field is missing")
                missing.path.append("." + name)
                raise missing
        return out

    return check


def _enum_check(symbols: list[str]) -> Check:
    allowed = frozenset(symbols)
    listing = ", ".join(symbols)

    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        found = f"got {_preview(value)}" if isinstance(value, str) else got(value)
        raise ViolationError(f"expected one of {listing}, {found}")

    return check


def _array_check(items: Check) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise ViolationError(f"expected array, {got(value)}")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(items(item))
            except ViolationError as violation:
                violation.path.append(f"[{index}]")
                raise
        return out

    return check


def _map_check(values: Check) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ViolationError(f"expected object, {got(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ViolationError(f"map keys must be strings, {got(key)}")
            try:
                out[key] = values(item)
            except ViolationError as violation:
                violation.path.append(f"[{json.dumps(key)}]")
                raise
        return out

    return check


def _union_check(branches: list[Check]) -> Check:
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
            except ViolationError as violation:
                failures.append(violation.problem)
        raise ViolationError("matches no branch of the union: " + "; ".join(failures))

    return check


def compile_check(schema: Any, namespace: str, named: dict[str, Check]) -> Check:
    if isinstance(schema, list):
        return _union_check([compile_check(branch, namespace, named) for branch in schema])
    if isinstance(schema, str):
        if schema in PRIMITIVE_CHECKS:
            return PRIMITIVE_CHECKS[schema]
        return named[fullname(schema, namespace)]
    kind = schema["type"]
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return _check_timestamp
    if kind == "record":
        name = fullname(schema["name"], schema.get("namespace", namespace))
        inner_namespace = name.rpartition(".")[0]
        fields = [
            (
                field["name"],
                compile_check(field["type"], inner_namespace, named),
                "default" in field,
                field.get("default"),
            )
            for field in schema["fields"]
        ]
        named[name] = _record_check(fields)
        return named[name]
    if kind == "enum":
        name = fullname(schema["name"], schema.get("namespace", namespace))
        named[name] = _enum_check(schema["symbols"])
        return named[name]
    if kind == "array":
        return _array_check(compile_check(schema["items"], namespace, named))
    if kind == "map":
        return _map_check(compile_check(schema["values"], namespace, named))
    if kind == "fixed":
        raise ValueError("fixed types are not supported")
    return compile_check(kind, namespace, named)


# --- JSON text and the JSON form of records ----------------------------------------------

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


def parse_json(data: bytes) -> Any:
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


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Output records whose JSON form differs from their Avro form (see the schemas' docs).
JSON_OBJECT_FIELDS = {"JourneyTrigger": ("payload",)}
BASE64_FIELDS = {"DeadLetter": ("key", "value")}


def json_to_avro_shape(record_name: str, obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for name in JSON_OBJECT_FIELDS.get(record_name, ()):
        if name in out:
            out[name] = json.dumps(out[name], separators=(",", ":"), sort_keys=True)
    for name in BASE64_FIELDS.get(record_name, ()):
        if isinstance(out.get(name), str):
            try:
                out[name] = base64.b64decode(out[name], validate=True)
            except (binascii.Error, ValueError):
                raise DecodeError(
                    DeadLetterReason.SCHEMA_VIOLATION, f"{name}: not a base64 string"
                ) from None
    return out
