"""The :class:`Codec`: input events decoded from any accepted format and validated, events
and output records encoded; every schema is parsed and compiled once, in the constructor."""

from __future__ import annotations

import base64
import copy
import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from streams.codec.errors import DeadLetterReason, DecodeError
from streams.codec.event_checks import check_text_lengths, normalise_identity
from streams.codec.json_check import (
    BASE64_FIELDS,
    JSON_OBJECT_FIELDS,
    ViolationError,
    dumps,
    got,
    iso,
    json_to_avro_shape,
    parse_json,
)
from streams.codec.registry import SchemaRegistry
from streams.codec.schemas import (
    NAMESPACE,
    SINGLE_OBJECT_MARKER,
    RecordType,
    load_previous_writers,
    load_record_types,
)
from streams.events import Event, EventKind
from streams.settings import OutputFormat


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
        self._types = load_record_types(Path(schemas_dir))
        missing = [kind.schema_name for kind in EventKind if kind.schema_name not in self._types]
        if missing:
            raise FileNotFoundError(f"{schemas_dir} lacks schemas for {', '.join(missing)}")
        self._inputs = {kind: self._types[kind.schema_name] for kind in EventKind}
        self._by_fingerprint = {rtype.fingerprint: rtype.name for rtype in self._types.values()}
        self._previous = load_previous_writers(Path(schemas_dir))
        self._max_event_bytes = max_event_bytes
        self._future_tolerance_ms = future_tolerance_ms
        self._registry = SchemaRegistry(schema_registry_url) if schema_registry_url else None

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

    def _read_json_event(self, rtype: RecordType, value: bytes) -> dict[str, Any]:
        obj = parse_json(value)
        if not isinstance(obj, dict):
            raise DecodeError(DeadLetterReason.NOT_AN_OBJECT, f"expected a JSON object, {got(obj)}")
        if obj.get("identity") is None:
            raise DecodeError(DeadLetterReason.MISSING_IDENTITY, "identity is missing")
        return self._check(rtype, obj)

    def _to_event(self, kind: EventKind, record: dict[str, Any], now: int) -> Event:
        event_id = record.pop("event_id")
        occurred_at = record.pop("occurred_at")
        identity = normalise_identity(record.pop("identity"))
        if not event_id.strip():
            raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, "event_id: must not be empty")
        check_text_lengths(event_id, "event_id")
        check_text_lengths(record, "")
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

    def _read_single_object(self, rtype: RecordType, data: bytes) -> dict[str, Any]:
        if len(data) < 10:
            raise DecodeError(DeadLetterReason.INVALID_AVRO, "single-object header is truncated")
        found = data[2:10]
        previous = self._previous.get(found)
        if previous is not None and previous[0] == rtype.name:
            # Written with an earlier version of the schema: resolved to the current one.
            return self._read_avro(rtype, data, 10, previous[1], rtype.parsed)
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

    def _read_confluent(self, rtype: RecordType, data: bytes) -> dict[str, Any]:
        schema_id = int.from_bytes(data[1:5], "big")
        if self._registry is None:
            raise DecodeError(
                DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
                f"Confluent wire format (schema id {schema_id}) needs a schema registry, "
                "but CDP_SCHEMA_REGISTRY_URL is unset",
            )
        writer = self._registry.writer_schema(schema_id)
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
        self, rtype: RecordType, data: bytes, start: int, writer: Any, reader: Any
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
        checked["occurred_at"] = iso(checked["occurred_at"])
        return dumps(checked)

    def encode_record(
        self, record_name: str, record: Mapping[str, Any], fmt: OutputFormat
    ) -> bytes:
        """An output record; raises ValueError if it breaks the schema.

        JSON is compact; ``occurred_at`` stays epoch milliseconds, bytes become base64
        strings and JourneyTrigger's ``payload`` is a JSON object (a JSON string in Avro).
        """
        rtype = self._record_type(record_name)
        avro_shape = dict(record)
        for name in JSON_OBJECT_FIELDS.get(rtype.name, ()):
            if not isinstance(record.get(name), Mapping):
                raise ValueError(f"{NAMESPACE}.{rtype.name}: {name}: expected a mapping")
            avro_shape[name] = json.dumps(record[name], separators=(",", ":"))
        checked = self._check_output(rtype, avro_shape)
        if fmt is OutputFormat.AVRO:
            return self._write(rtype, checked)
        for name in JSON_OBJECT_FIELDS.get(rtype.name, ()):
            checked[name] = record.get(name)
        for name in BASE64_FIELDS.get(rtype.name, ()):
            if checked[name] is not None:
                checked[name] = base64.b64encode(checked[name]).decode("ascii")
        return dumps(checked)

    def decode_record(self, record_name: str, data: bytes) -> dict[str, Any]:
        """Inverse of :meth:`encode_record`, for either format; raises :class:`DecodeError`."""
        rtype = self._record_type(record_name)
        if data[:2] == SINGLE_OBJECT_MARKER:
            record = self._read_single_object(rtype, data)
        else:
            obj = parse_json(data)
            if not isinstance(obj, dict):
                raise DecodeError(
                    DeadLetterReason.NOT_AN_OBJECT, f"expected a JSON object, {got(obj)}"
                )
            record = self._check(rtype, json_to_avro_shape(rtype.name, obj))
        for name in JSON_OBJECT_FIELDS.get(rtype.name, ()):
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

    def _record_type(self, record_name: str) -> RecordType:
        short = record_name.removeprefix(f"{NAMESPACE}.")
        try:
            return self._types[short]
        except KeyError:
            raise ValueError(f"no schema for record {record_name!r}") from None

    @staticmethod
    def _check(rtype: RecordType, value: Any) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = rtype.check(value)
        except ViolationError as violation:
            raise DecodeError(violation.reason, violation.detail()) from None
        return checked

    @staticmethod
    def _check_output(rtype: RecordType, value: Any) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = rtype.check(value)
        except ViolationError as violation:
            raise ValueError(f"{NAMESPACE}.{rtype.name}: {violation.detail()}") from None
        return checked

    @staticmethod
    def _write(rtype: RecordType, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(rtype.header)
        fastavro.schemaless_writer(buffer, rtype.parsed, record)
        return buffer.getvalue()
