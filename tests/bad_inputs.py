"""A corpus of malformed inputs, each with the dead-letter reason it must get.

Shared by the codec's unit test (fast, every case against :meth:`Codec.decode`) and the
integration test that sends them all, between valid events, through a real worker.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from streams.codec import SINGLE_OBJECT_MARKER, Codec
from streams.events import EventKind

#: The integration worker runs with this limit, so an oversized payload stays cheap to send.
MAX_EVENT_BYTES = 65_536
NOW_MS = 1_795_430_000_000


@dataclass(frozen=True)
class BadInput:
    name: str
    kind: EventKind
    value: bytes
    reason: str


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def valid(kind: EventKind, n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid JSON event of ``kind``; ``overrides`` replace (or, as None-less keys, add) fields."""
    base: dict[str, Any] = {
        "event_id": f"valid-{kind.value}-{n}",
        "occurred_at": NOW_MS,
        "identity": {"anonymous_id": f"corpus-{n}"},
    }
    bodies: dict[EventKind, dict[str, Any]] = {
        EventKind.PAGE_VIEW: {"url": "https://shop.example/toys", "category": "toys"},
        EventKind.ORDER: {
            "order_id": "o-1",
            "status": "placed",
            "total": 10.0,
            "currency": "EUR",
            "items": [{"product_id": "p", "category": "toys", "quantity": 1, "unit_price": 10.0}],
        },
        EventKind.EMAIL: {"campaign_id": "c", "message_id": "m", "action": "opened"},
        EventKind.IDENTIFY: {"traits": {"first_name": "Ann"}, "newsletter": "subscribed"},
        EventKind.TRACK: {"name": "Brochure Requested", "properties": {"region": "north"}},
    }
    return {**base, **bodies[kind], **overrides}


def _without(kind: EventKind, field: str) -> dict[str, Any]:
    event = valid(kind)
    del event[field]
    return event


def _nested(depth: int) -> bytes:
    return b'{"event_id": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}"


def corpus(codec: Codec) -> list[BadInput]:
    """Every malformed input; Avro cases are built with ``codec`` from the real schemas."""
    page_view, order, email, identify = (
        EventKind.PAGE_VIEW,
        EventKind.ORDER,
        EventKind.EMAIL,
        EventKind.IDENTIFY,
    )
    avro_view = codec.encode_event(codec.decode(page_view, _json(valid(page_view)), now_ms=NOW_MS))
    fingerprint = codec.fingerprint("PageView")
    cases = [
        # -- framing and encoding
        BadInput("empty payload", page_view, b"", "empty_payload"),
        BadInput("oversized payload", page_view, b" " * (MAX_EVENT_BYTES + 1), "payload_too_large"),
        BadInput("invalid UTF-8", page_view, b'{"event_id": "\xff\xfe"}', "invalid_utf8"),
        BadInput("latin-1 bytes", order, '{"currency": "€"}'.encode("cp1252"), "invalid_utf8"),
        BadInput(
            "lone surrogate escape",
            page_view,
            _json(valid(page_view)).replace(b"corpus-0", b"\\ud800"),
            "invalid_utf8",
        ),
        BadInput("truncated JSON", page_view, _json(valid(page_view))[:-7], "invalid_json"),
        BadInput("trailing garbage", page_view, _json(valid(page_view)) + b" }", "invalid_json"),
        BadInput("single quotes", page_view, b"{'event_id': 'x'}", "invalid_json"),
        BadInput(
            "NaN total", order, _json(valid(order)).replace(b"10.0,", b"NaN,", 1), "invalid_json"
        ),
        BadInput("deeply nested JSON", page_view, _nested(10_000), "invalid_json"),
        BadInput("JSON array", page_view, b"[1, 2, 3]", "not_an_object"),
        BadInput("JSON string", page_view, b'"page view"', "not_an_object"),
        BadInput("JSON number", email, b"42", "not_an_object"),
        BadInput("JSON null", identify, b"null", "not_an_object"),
        # -- Avro
        BadInput("truncated Avro", page_view, avro_view[: len(avro_view) // 2], "invalid_avro"),
        BadInput("Avro header only", page_view, SINGLE_OBJECT_MARKER + fingerprint, "invalid_avro"),
        BadInput(
            "wrong fingerprint",
            page_view,
            SINGLE_OBJECT_MARKER + struct.pack("<Q", 0xDEADBEEF) + avro_view[10:],
            "unknown_fingerprint",
        ),
        BadInput("Avro of another record type", order, avro_view, "wrong_record_type"),
        BadInput(
            "Confluent wire format without a registry",
            page_view,
            b"\x00\x00\x00\x00\x07" + avro_view[10:],
            "schema_registry_unavailable",
        ),
        BadInput("wrong magic byte", page_view, b"\xc3\x02" + avro_view[2:], "invalid_utf8"),
        # -- identity
        BadInput(
            "no identity", page_view, _json(_without(page_view, "identity")), "missing_identity"
        ),
        BadInput(
            "empty identity", page_view, _json(valid(page_view, identity={})), "missing_identity"
        ),
        BadInput(
            "identity of empty strings",
            email,
            _json(valid(email, identity={"email": "", "anonymous_id": "  "})),
            "missing_identity",
        ),
        BadInput(
            "identity not an object", order, _json(valid(order, identity="ann")), "schema_violation"
        ),
        BadInput(
            "identifier not a string",
            identify,
            _json(valid(identify, identity={"user_id": 42})),
            "schema_violation",
        ),
        BadInput(
            "huge identifier",
            page_view,
            _json(valid(page_view, identity={"anonymous_id": "a" * 5_000})),
            "schema_violation",
        ),
        # -- required fields and types
        BadInput(
            "no event_id", page_view, _json(_without(page_view, "event_id")), "schema_violation"
        ),
        BadInput("empty event_id", order, _json(valid(order, event_id="")), "schema_violation"),
        BadInput("numeric event_id", email, _json(valid(email, event_id=7)), "schema_violation"),
        BadInput(
            "no occurred_at",
            page_view,
            _json(_without(page_view, "occurred_at")),
            "schema_violation",
        ),
        BadInput("no url", page_view, _json(_without(page_view, "url")), "schema_violation"),
        BadInput("url is a number", page_view, _json(valid(page_view, url=5)), "schema_violation"),
        BadInput("total is text", order, _json(valid(order, total="ten")), "schema_violation"),
        BadInput(
            "items not a list", order, _json(valid(order, items={"p": 1})), "schema_violation"
        ),
        BadInput(
            "item without product",
            order,
            _json(valid(order, items=[{"quantity": 1, "unit_price": 1.0}])),
            "schema_violation",
        ),
        BadInput(
            "traits nested",
            identify,
            _json(valid(identify, traits={"a": {"b": 1}})),
            "schema_violation",
        ),
        BadInput(
            "consent not boolean",
            identify,
            _json(valid(identify, consent={"email_marketing": "yes"})),
            "schema_violation",
        ),
        BadInput(
            "huge string",
            page_view,
            _json(valid(page_view, title="t" * 60_000)),
            "schema_violation",
        ),
        # -- enums
        BadInput(
            "unknown page action",
            page_view,
            _json(valid(page_view, action="dance")),
            "schema_violation",
        ),
        BadInput(
            "unknown order status", order, _json(valid(order, status="lost")), "schema_violation"
        ),
        BadInput(
            "unknown email action",
            email,
            _json(valid(email, action="forwarded")),
            "schema_violation",
        ),
        BadInput(
            "unknown newsletter status",
            identify,
            _json(valid(identify, newsletter="maybe")),
            "schema_violation",
        ),
        # -- timestamps
        BadInput(
            "timestamp in 2999",
            page_view,
            _json(valid(page_view, occurred_at=32_503_680_000_000)),
            "invalid_timestamp",
        ),
        BadInput(
            "timestamp before 1970", order, _json(valid(order, occurred_at=-1)), "invalid_timestamp"
        ),
        BadInput(
            "timestamp as words",
            email,
            _json(valid(email, occurred_at="yesterday")),
            "invalid_timestamp",
        ),
        BadInput(
            "timestamp as bool",
            identify,
            _json(valid(identify, occurred_at=True)),
            "invalid_timestamp",
        ),
    ]
    return cases
