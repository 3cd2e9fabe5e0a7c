"""Why an input is refused: the dead-letter reasons, :class:`DecodeError`, the ``DeadLetter``
record, and the size limits the codec enforces."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

MAX_JSON_DEPTH = 64
# Longer values are abuse or a bug, and would bloat profiles: an identifier is also a lookup
# key (the API takes no longer ones), any other text goes into profiles and mails at most.
MAX_IDENTIFIER_CHARS = 512
MAX_TEXT_CHARS = 8192
MAX_DETAIL_CHARS = 2000


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
