"""The wire format: every input kind in every format, every dead-letter reason from bytes."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codec import (
    MAX_JSON_DEPTH,
    MAX_TEXT_CHARS,
    Codec,
    DeadLetterReason,
    DecodeError,
    dead_letter_record,
)
from streams.events import Event, EventKind, Identity
from streams.settings import PROJECT_ROOT, OutputFormat
from tests import bad_inputs

SCHEMAS = PROJECT_ROOT / "schemas"
# Order items carry an optional stay (starts_at, ends_at); decoded, absent ones are None.
NO_STAY = {"starts_at": None, "ends_at": None}
NOW = 1_732_350_000_000  # 2024-11-23T08:20:00Z
DAY_MS = 86_400_000
R = DeadLetterReason

CODEC = Codec(SCHEMAS)

EVENTS = {
    EventKind.PAGE_VIEW: Event(
        EventKind.PAGE_VIEW,
        "pv-1",
        NOW - 1000,
        Identity(anonymous_id="anon-1"),
        {
            "url": "https://shop.example/baking/mixer",
            "path": "/baking/mixer",
            "title": "Stand mixer",
            "referrer": None,
            "category": "baking",
            "product_id": "p-42",
            "action": "add_to_cart",
        },
    ),
    EventKind.ORDER: Event(
        EventKind.ORDER,
        "order-1",
        NOW - 2000,
        Identity(user_id="u-7", email="jo@example.com"),
        {
            "order_id": "o-1",
            "status": "placed",
            "total": 129.5,
            "currency": "EUR",
            "items": [
                {"product_id": "p-42", "category": "baking", "quantity": 1, "unit_price": 99.5}
                | NO_STAY,
                {"product_id": "p-7", "category": None, "quantity": 2, "unit_price": 15.0}
                | NO_STAY,
            ],
        },
    ),
    EventKind.EMAIL: Event(
        EventKind.EMAIL,
        "mail-1",
        NOW - 3000,
        Identity(email="jo@example.com"),
        {
            "campaign_id": "c-1",
            "message_id": "m-1",
            "action": "clicked",
            "url": "https://shop.example/toys",
            "category": "toys",
        },
    ),
    EventKind.IDENTIFY: Event(
        EventKind.IDENTIFY,
        "id-1",
        NOW - 4000,
        Identity(anonymous_id="anon-1", user_id="u-7", email="jo@example.com"),
        {
            "traits": {"first_name": "Jo", "language": "nl"},
            "newsletter": "subscribed",
            "consent": {"email_marketing": True, "profiling": False},
        },
    ),
    EventKind.TRACK: Event(
        EventKind.TRACK,
        "track-1",
        NOW - 5000,
        Identity(anonymous_id="anon-1"),
        {"name": "Brochure Requested", "properties": {"region": "north", "pages": "12"}},
    ),
}

ORDER_JSON: dict[str, Any] = {
    "event_id": "order-2",
    "occurred_at": "2024-11-23T07:00:00Z",
    "identity": {"email": "jo@example.com"},
    "order_id": "o-2",
    "status": "placed",
    "total": 10,
    "currency": "EUR",
    "items": [{"product_id": "p-1", "quantity": 2, "unit_price": 5}],
}

OUTPUT_RECORDS: dict[str, dict[str, Any]] = {
    "SegmentChange": {
        "profile_id": "prof-1",
        "segment": "bakers",
        "change": "entered",
        "sequence": 3,
        "occurred_at": NOW,
        "cause_event_id": "pv-1",
    },
    "JourneyTrigger": {
        "trigger_id": "t-1",
        "journey": "welcome",
        "step": "ask-interests",
        "profile_id": "prof-1",
        "email": "jo@example.com",
        "occurred_at": NOW,
        "cause_event_id": "id-1",
        "payload": {"interests": ["baking", "toys"], "first_name": "Jo", "n": 1},
    },
    "DeadLetter": dead_letter_record(
        topic="cdp.orders",
        partition=3,
        offset=12345,
        key=b"u-7",
        value=b"\xff\x00not json",
        reason=R.INVALID_UTF8,
        detail="byte 0 is not valid UTF-8",
        now_ms=NOW,
    ),
}


def as_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def order_json(**changes: Any) -> bytes:
    return as_json({**ORDER_JSON, **changes})


def decode_error(kind: EventKind, value: bytes | None, codec: Codec = CODEC) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        codec.decode(kind, value, now_ms=NOW)
    return caught.value


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(OutputFormat))
@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_round_trips(kind: EventKind, fmt: OutputFormat) -> None:
    event = EVENTS[kind]
    data = CODEC.encode_event(event, fmt)
    assert CODEC.decode(kind, data, now_ms=NOW) == event


def test_avro_is_single_object_encoding() -> None:
    data = CODEC.encode_event(EVENTS[EventKind.ORDER])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == CODEC.fingerprint("Order")
    record = read_plain_avro("Order", data)
    assert record["occurred_at"] == datetime(2024, 11, 23, 8, 19, 58, tzinfo=UTC)
    assert record["order_id"] == "o-1"
    assert record["items"][1]["quantity"] == 2


def test_json_encoding_uses_iso_timestamps() -> None:
    data = json.loads(CODEC.encode_event(EVENTS[EventKind.PAGE_VIEW], OutputFormat.JSON))
    assert data["occurred_at"] == "2024-11-23T08:19:59.000Z"
    assert data["identity"] == {"anonymous_id": "anon-1", "user_id": None, "email": None}


def test_json_fills_defaults_and_ignores_unknown_fields() -> None:
    data = as_json(
        {
            "event_id": "pv-2",
            "occurred_at": NOW,
            "identity": {"anonymous_id": "a"},
            "url": "https://x.example/",
            "added_in_v2": {"deep": [1, 2, {"x": None}]},
        }
    )
    event = CODEC.decode(EventKind.PAGE_VIEW, data, now_ms=NOW)
    assert event.body == {
        "url": "https://x.example/",
        "path": None,
        "title": None,
        "referrer": None,
        "category": None,
        "product_id": None,
        "action": "view",
    }


def test_json_numbers_are_normalised_like_avro() -> None:
    event = CODEC.decode(EventKind.ORDER, order_json(), now_ms=NOW)
    assert event.body["total"] == 10.0
    assert isinstance(event.body["total"], float)
    assert event.body["items"] == [
        {"product_id": "p-1", "category": None, "quantity": 2, "unit_price": 5.0} | NO_STAY
    ]
    assert CODEC.decode(EventKind.ORDER, CODEC.encode_event(event), now_ms=NOW) == event


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2024-11-23T07:00:00Z", 1_732_345_200_000),
        ("2024-11-23T08:00:00.250+01:00", 1_732_345_200_250),
        ("2024-11-23T07:00:00", 1_732_345_200_000),
        (1_732_345_200_123, 1_732_345_200_123),
        (0, 0),
    ],
)
def test_occurred_at_accepts_iso_and_epoch_ms(occurred_at: Any, expected: int) -> None:
    event = CODEC.decode(EventKind.ORDER, order_json(occurred_at=occurred_at), now_ms=NOW)
    assert event.occurred_at == expected


def test_identity_is_normalised() -> None:
    identity = {"anonymous_id": "  ", "user_id": " u-7 ", "email": " Jo@Example.COM "}
    event = CODEC.decode(EventKind.ORDER, order_json(identity=identity), now_ms=NOW)
    assert event.identity == Identity(anonymous_id=None, user_id="u-7", email="jo@example.com")


def test_avro_identity_is_normalised_too() -> None:
    raw = Event(EventKind.EMAIL, "m", NOW, Identity(anonymous_id="", email="A@B.C"), {})
    body = dict(EVENTS[EventKind.EMAIL].body)
    data = CODEC.encode_event(Event(raw.kind, raw.event_id, raw.occurred_at, raw.identity, body))
    assert CODEC.decode(EventKind.EMAIL, data, now_ms=NOW).identity == Identity(email="a@b.c")


def test_text_up_to_the_limit_is_fine_and_longer_text_is_refused() -> None:
    url = "https://x.example/" + "a" * (MAX_TEXT_CHARS - 18)

    def page(url: str) -> bytes:
        return as_json(
            {"event_id": "e", "occurred_at": NOW, "identity": {"user_id": "u"}, "url": url}
        )

    assert CODEC.decode(EventKind.PAGE_VIEW, page(url), now_ms=NOW).body["url"] == url
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(EventKind.PAGE_VIEW, page(url + "a"), now_ms=NOW)
    assert caught.value.reason == R.SCHEMA_VIOLATION
    assert caught.value.detail == f"url: longer than {MAX_TEXT_CHARS} characters"


@pytest.mark.parametrize(
    ("kind", "value", "where"),
    [
        (
            EventKind.ORDER,
            order_json(
                items=[
                    {"product_id": "p-1", "quantity": 1, "unit_price": 1.0},
                    {"product_id": "p" * (MAX_TEXT_CHARS + 1), "quantity": 1, "unit_price": 1.0},
                ]
            ),
            "items[1]['product_id']",
        ),
        (
            EventKind.IDENTIFY,
            as_json(
                {
                    "event_id": "e",
                    "occurred_at": NOW,
                    "identity": {"user_id": "u"},
                    "traits": {"t" * (MAX_TEXT_CHARS + 1): "x"},
                }
            ),
            "traits key",
        ),
    ],
)
def test_long_text_deep_in_an_event_is_refused_with_where_it_is(
    kind: EventKind, value: bytes, where: str
) -> None:
    error = decode_error(kind, value)
    assert error.reason == R.SCHEMA_VIOLATION
    assert error.detail == f"{where}: longer than {MAX_TEXT_CHARS} characters"


def test_many_brackets_without_deep_nesting_are_fine() -> None:
    items = [{"product_id": f"p-{i}", "quantity": 1, "unit_price": 1.0} for i in range(500)]
    event = CODEC.decode(
        EventKind.ORDER, order_json(items=items, note="[[[{{{ in a string"), now_ms=NOW
    )
    assert len(event.body["items"]) == 500


def test_nesting_at_the_limit_is_fine() -> None:
    nested: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):  # the event object itself is one level
        nested = [nested]
    assert CODEC.decode(EventKind.ORDER, order_json(extra=nested), now_ms=NOW).event_id


# --- dead-letter reasons ----------------------------------------------------------------


def test_empty_payload() -> None:
    assert decode_error(EventKind.ORDER, None).reason == R.EMPTY_PAYLOAD
    assert decode_error(EventKind.ORDER, b"").reason == R.EMPTY_PAYLOAD


def test_payload_too_large() -> None:
    small = Codec(SCHEMAS, max_event_bytes=1024)
    error = decode_error(EventKind.ORDER, order_json(currency="E" * 2000), small)
    assert error.reason == R.PAYLOAD_TOO_LARGE
    assert "1024" in error.detail
    assert small.decode(EventKind.ORDER, order_json(), now_ms=NOW).event_id == "order-2"


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b'{"event_id": "\xff\xfe"}', R.INVALID_UTF8, "byte 14"),
        ('{"event_id": "é"}'.encode("latin-1"), R.INVALID_UTF8, "UTF-8"),
        (b'{"event_id": "x", "identity": {"email": "\\ud800@x"}}', R.INVALID_UTF8, "surrogate"),
        (b'{"event_id": "o-1", ', R.INVALID_JSON, "Expecting"),
        (b"{'event_id': 'o-1'}", R.INVALID_JSON, "double quotes"),
        (b'{"total": NaN}', R.INVALID_JSON, "NaN"),
        (b'{"total": -Infinity}', R.INVALID_JSON, "Infinity"),
        (b"\x00\x01", R.INVALID_JSON, ""),
        (b'{"a": ' * 65 + b"1" + b"}" * 65, R.INVALID_JSON, "nested deeper than 64"),
        (b"[" * 100_000 + b"]" * 100_000, R.INVALID_JSON, "nested deeper"),
        (b'{"total": 1' + b"0" * 5000 + b"}", R.INVALID_JSON, "limit"),
        (b'[{"event_id": "o-1"}]', R.NOT_AN_OBJECT, "got array"),
        (b'"o-1"', R.NOT_AN_OBJECT, "got string"),
        (b"null", R.NOT_AN_OBJECT, "got null"),
    ],
)
def test_unreadable_json(value: bytes, reason: DeadLetterReason, detail: str) -> None:
    error = decode_error(EventKind.ORDER, value)
    assert error.reason == reason
    assert detail in error.detail


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"items": [{"product_id": "p", "quantity": "2", "unit_price": 5}]},
         "items[0].quantity: expected int, got string"),
        ({"items": [{"product_id": "p", "quantity": 2.5, "unit_price": 5}]},
         "items[0].quantity: expected int, got float"),
        ({"items": [{"product_id": "p", "quantity": 2**31, "unit_price": 5}]},
         "items[0].quantity: 2147483648 is out of range for int"),
        ({"items": [{"product_id": "p", "quantity": 1}]},
         "items[0].unit_price: required field is missing"),
        ({"items": {"product_id": "p"}}, "items: expected array, got object"),
        ({"status": "shipped"},
         "status: expected one of placed, cancelled, refunded, got 'shipped'"),
        ({"status": None}, "status: expected one of placed, cancelled, refunded, got null"),
        ({"total": True}, "total: expected double, got boolean"),
        ({"total": "10.00"}, "total: expected double, got string"),
        ({"total": 10**400}, "total: number is too large for a double"),
        ({"currency": None}, "currency: expected string, got null"),
        ({"event_id": 17}, "event_id: expected string, got int"),
        ({"event_id": ""}, "event_id: must not be empty"),
        ({"event_id": "   "}, "event_id: must not be empty"),
        ({"identity": {"email": 5}}, "identity.email: expected string, got int"),
        ({"identity": "jo@example.com"}, "identity: expected object, got string"),
    ],
)  # fmt: skip
def test_schema_violations_name_the_field(changes: dict[str, Any], detail: str) -> None:
    error = decode_error(EventKind.ORDER, order_json(**changes))
    assert error.reason == R.SCHEMA_VIOLATION
    assert error.detail == detail


def test_schema_violation_for_a_missing_required_field() -> None:
    data = as_json({"event_id": "e", "occurred_at": NOW, "identity": {"user_id": "u"}})
    error = decode_error(EventKind.PAGE_VIEW, data)
    assert (error.reason, error.detail) == (R.SCHEMA_VIOLATION, "url: required field is missing")


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"traits": {"age": 41}}, 'traits["age"]: expected string, got int'),
        ({"consent": {"email": "yes"}}, 'consent["email"]: expected boolean, got string'),
        ({"consent": {"email": 1}}, 'consent["email"]: expected boolean, got int'),
        ({"newsletter": "maybe"}, "newsletter: expected one of subscribed, unsubscribed"),
        ({"traits": ["a"]}, "traits: expected object, got array"),
    ],
)
def test_identify_violations(changes: dict[str, Any], detail: str) -> None:
    base = {"event_id": "i", "occurred_at": NOW, "identity": {"user_id": "u"}}
    error = decode_error(EventKind.IDENTIFY, as_json({**base, **changes}))
    assert error.reason == R.SCHEMA_VIOLATION
    assert error.detail.startswith(detail)


@pytest.mark.parametrize(
    "identity",
    [
        None,
        {},
        {"anonymous_id": None, "user_id": None, "email": None},
        {"user_id": " ", "email": ""},
    ],
)
def test_missing_identity(identity: Any) -> None:
    payload = dict(ORDER_JSON, identity=identity)
    if identity is None:
        del payload["identity"]
    assert decode_error(EventKind.ORDER, as_json(payload)).reason == R.MISSING_IDENTITY
    payload["identity"] = identity
    assert decode_error(EventKind.ORDER, as_json(payload)).reason == R.MISSING_IDENTITY


def test_missing_identity_in_avro() -> None:
    event = EVENTS[EventKind.PAGE_VIEW]
    blank = Event(event.kind, event.event_id, event.occurred_at, Identity(email=" "), event.body)
    data = CODEC.encode_event(blank)
    assert decode_error(EventKind.PAGE_VIEW, data).reason == R.MISSING_IDENTITY


@pytest.mark.parametrize(
    ("occurred_at", "detail"),
    [
        (NOW + DAY_MS + 1, "in the future"),
        ("2030-01-01T00:00:00Z", "in the future"),
        (-1, "before 1970"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("yesterday", "'yesterday' is not an ISO-8601 timestamp"),
        ("2024-13-01T00:00:00Z", "not an ISO-8601 timestamp"),
        (1.7e12, "expected epoch milliseconds or an ISO-8601 string, got float"),
        (True, "got boolean"),
        (None, "got null"),
        (2**70, "out of range"),
    ],
)
def test_invalid_timestamps(occurred_at: Any, detail: str) -> None:
    error = decode_error(EventKind.ORDER, order_json(occurred_at=occurred_at))
    assert error.reason == R.INVALID_TIMESTAMP
    assert detail in error.detail


def test_future_tolerance_is_configurable() -> None:
    strict = Codec(SCHEMAS, future_tolerance_ms=0)
    assert strict.decode(EventKind.ORDER, order_json(occurred_at=NOW), now_ms=NOW)
    error = decode_error(EventKind.ORDER, order_json(occurred_at=NOW + 1), strict)
    assert error.reason == R.INVALID_TIMESTAMP
    assert CODEC.decode(EventKind.ORDER, order_json(occurred_at=NOW + DAY_MS), now_ms=NOW)


def test_timestamp_violation_in_avro() -> None:
    event = EVENTS[EventKind.ORDER]
    future = Event(event.kind, event.event_id, NOW + 2 * DAY_MS, event.identity, event.body)
    error = decode_error(EventKind.ORDER, CODEC.encode_event(future))
    assert error.reason == R.INVALID_TIMESTAMP


def test_unknown_fingerprint() -> None:
    data = CODEC.encode_event(EVENTS[EventKind.ORDER])
    error = decode_error(EventKind.ORDER, data[:2] + bytes(8) + data[10:])
    assert error.reason == R.UNKNOWN_FINGERPRINT
    assert "0000000000000000" in error.detail


@pytest.mark.parametrize("record", ["Order", "SegmentChange", "Identity"])
def test_wrong_record_type(record: str) -> None:
    data = CODEC.encode_event(EVENTS[EventKind.ORDER])
    error = decode_error(EventKind.PAGE_VIEW, data[:2] + CODEC.fingerprint(record) + data[10:])
    assert error.reason == R.WRONG_RECORD_TYPE
    assert f"got cdp.{record}" in error.detail


def read_plain_avro(record_name: str, data: bytes) -> dict[str, Any]:
    """Read single-object bytes with nothing but fastavro and the schema."""
    schema = fastavro.parse_schema(CODEC.schema(record_name))
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema)
    assert isinstance(record, dict)
    return record


def _avro_order() -> bytes:
    return CODEC.encode_event(EVENTS[EventKind.ORDER])


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (lambda data: data[:-3], "cannot read a cdp.Order"),
        (lambda data: data[:11], "cannot read a cdp.Order"),
        (lambda data: data + b"\x00", "1 bytes left over"),
        (lambda data: data[:6], "header is truncated"),
        (lambda data: data[:10] + b"\xff" * 40, "cannot read"),
        # the enum index of status, 0x7e, is far past the three symbols
        (lambda data: data[:10] + data[10:].replace(b"\x06o-1\x00", b"\x06o-1\x7e"), "cannot read"),
    ],
)  # fmt: skip
def test_invalid_avro(mangle: Callable[[bytes], bytes], detail: str) -> None:
    error = decode_error(EventKind.ORDER, mangle(_avro_order()))
    assert error.reason == R.INVALID_AVRO
    assert detail in error.detail


def test_invalid_utf8_in_avro_strings() -> None:
    data = _avro_order().replace(b"\x06EUR", b"\x06\xffUR")
    assert decode_error(EventKind.ORDER, data).reason == R.INVALID_AVRO


def test_non_finite_double_in_avro() -> None:
    data = _avro_order().replace(struct.pack("<d", 129.5), struct.pack("<d", float("nan")))
    error = decode_error(EventKind.ORDER, data)
    assert (error.reason, error.detail) == (
        R.SCHEMA_VIOLATION,
        "total: expected a finite number, got nan",
    )


def test_confluent_wire_format_needs_a_registry() -> None:
    error = decode_error(EventKind.ORDER, b"\x00\x00\x00\x00\x07" + _avro_order()[10:])
    assert error.reason == R.SCHEMA_REGISTRY_UNAVAILABLE
    assert "CDP_SCHEMA_REGISTRY_URL is unset" in error.detail
    assert "schema id 7" in error.detail


# --- Confluent wire format with a (fake) schema registry --------------------------------

OLD_PAGE_VIEW = {
    "type": "record",
    "name": "PageView",
    "namespace": "cdp",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "identity",
            "type": {
                "type": "record",
                "name": "Identity",
                "fields": [
                    {"name": "anonymous_id", "type": ["null", "string"], "default": None},
                    {"name": "user_id", "type": ["null", "string"], "default": None},
                    {"name": "email", "type": ["null", "string"], "default": None},
                ],
            },
        },
        {"name": "url", "type": "string"},
        {"name": "legacy_flag", "type": "boolean"},
    ],
}


def confluent(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


class _FakeRegistry(BaseHTTPRequestHandler):
    """``GET /schemas/ids/{id}`` as a Confluent schema registry answers it."""

    schemas: dict[int, dict[str, Any]]
    requested: list[int]

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith("/schemas/ids/"):
            self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            return
        schema_id = int(path.rsplit("/", 1)[1])
        self.requested.append(schema_id)
        if schema_id == 500:
            self._answer(500, {"message": "boom"})
        elif schema_id not in self.schemas:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        else:
            self._answer(200, {"schema": json.dumps(self.schemas[schema_id])})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[tuple[Codec, list[int]]]:
    """A codec whose registry, a real HTTP server on loopback, serves id 1 = an older
    PageView and id 2 = Order, answers 500 for id 500 and 404 otherwise; logs the ids."""
    requested: list[int] = []
    handler = type(
        "Registry",
        (_FakeRegistry,),
        {"schemas": {1: OLD_PAGE_VIEW, 2: CODEC.schema("Order")}, "requested": requested},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield (
            Codec(SCHEMAS, schema_registry_url=f"http://127.0.0.1:{server.server_port}"),
            requested,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_confluent_resolves_an_older_writer_schema(registry: tuple[Codec, list[int]]) -> None:
    codec, requested = registry
    record = {
        "event_id": "pv-9",
        "occurred_at": NOW,
        "identity": {"anonymous_id": "a-9", "user_id": None, "email": None},
        "url": "https://x.example/",
        "legacy_flag": True,
    }
    data = confluent(1, OLD_PAGE_VIEW, record)
    for _ in range(2):
        event = codec.decode(EventKind.PAGE_VIEW, data, now_ms=NOW)
        assert event.occurred_at == NOW
        assert event.identity == Identity(anonymous_id="a-9")
        assert event.body["url"] == "https://x.example/"
        assert event.body["action"] == "view"
        assert "legacy_flag" not in event.body
    assert requested == [1]  # cached by id


def test_confluent_errors(registry: tuple[Codec, list[int]]) -> None:
    codec, _ = registry
    order = confluent(2, CODEC.schema("Order"), {
        "event_id": "o", "occurred_at": NOW, "identity": {"user_id": "u"}, "order_id": "o",
        "status": "placed", "total": 1.0, "currency": "EUR", "items": [],
    })  # fmt: skip
    assert codec.decode(EventKind.ORDER, order, now_ms=NOW).body["order_id"] == "o"
    assert decode_error(EventKind.PAGE_VIEW, order, codec).reason == R.WRONG_RECORD_TYPE
    unknown = b"\x00" + (99).to_bytes(4, "big") + order[5:]
    assert decode_error(EventKind.ORDER, unknown, codec).reason == R.UNKNOWN_FINGERPRINT
    failing = b"\x00" + (500).to_bytes(4, "big") + order[5:]
    assert decode_error(EventKind.ORDER, failing, codec).reason == R.SCHEMA_REGISTRY_UNAVAILABLE
    assert decode_error(EventKind.ORDER, order[:-2], codec).reason == R.INVALID_AVRO


def test_a_failing_registry_is_not_retried(registry: tuple[Codec, list[int]]) -> None:
    """The record is dead-lettered at once; the next record with that id asks again."""
    codec, requested = registry
    failing = b"\x00" + (500).to_bytes(4, "big") + b"\x02"
    for _ in range(2):
        assert decode_error(EventKind.ORDER, failing, codec).reason == R.SCHEMA_REGISTRY_UNAVAILABLE
    assert requested == [500, 500]


def test_unreachable_registry() -> None:
    codec = Codec(SCHEMAS, schema_registry_url="http://127.0.0.1:9")
    error = decode_error(EventKind.ORDER, b"\x00\x00\x00\x00\x01\x02", codec)
    assert error.reason == R.SCHEMA_REGISTRY_UNAVAILABLE
    assert "failed" in error.detail


# --- fingerprints -----------------------------------------------------------------------


def rabin_fingerprint(data: bytes) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@pytest.mark.parametrize("record", [*(kind.schema_name for kind in EventKind), *OUTPUT_RECORDS])
def test_fingerprint_is_crc64_avro_of_the_canonical_form(record: str) -> None:
    canonical = to_parsing_canonical_form(CODEC.schema(record))
    expected = bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    assert CODEC.fingerprint(record) == expected
    assert CODEC.fingerprint(f"cdp.{record}") == expected
    assert rabin_fingerprint(canonical.encode()) == expected


def test_named_types_are_inlined_once() -> None:
    canonical = to_parsing_canonical_form(CODEC.schema("Order"))
    assert canonical.count('"name":"cdp.OrderItem"') == 1
    assert canonical.count('"name":"cdp.Identity"') == 1
    assert CODEC.fingerprint("Order") != CODEC.fingerprint("PageView")


def test_unknown_record_name() -> None:
    with pytest.raises(ValueError, match="Nope"):
        CODEC.fingerprint("Nope")


# --- output records ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(OutputFormat))
@pytest.mark.parametrize("name", list(OUTPUT_RECORDS))
def test_output_records_round_trip(name: str, fmt: OutputFormat) -> None:
    record = OUTPUT_RECORDS[name]
    data = CODEC.encode_record(name, record, fmt)
    assert CODEC.decode_record(name, data) == record
    if fmt is OutputFormat.AVRO:
        assert data[:10] == b"\xc3\x01" + CODEC.fingerprint(name)


def test_output_json_shapes() -> None:
    def encoded(name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            CODEC.encode_record(name, OUTPUT_RECORDS[name], OutputFormat.JSON)
        )
        return result

    dead = encoded("DeadLetter")
    assert base64.b64decode(dead["value"]) == b"\xff\x00not json"
    assert dead["key"] == "dS03"
    assert dead["reason"] == "invalid_utf8"
    assert dead["occurred_at"] == NOW
    trigger = encoded("JourneyTrigger")
    assert trigger["payload"] == {"interests": ["baking", "toys"], "first_name": "Jo", "n": 1}
    assert b" " not in CODEC.encode_record(
        "SegmentChange", OUTPUT_RECORDS["SegmentChange"], OutputFormat.JSON
    )


def test_journey_payload_is_a_json_string_in_avro() -> None:
    data = CODEC.encode_record(
        "JourneyTrigger", OUTPUT_RECORDS["JourneyTrigger"], OutputFormat.AVRO
    )
    raw = read_plain_avro("JourneyTrigger", data)
    assert json.loads(raw["payload"]) == OUTPUT_RECORDS["JourneyTrigger"]["payload"]


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_dead_letter_of_a_missing_value(fmt: OutputFormat) -> None:
    record = dead_letter_record(
        topic="cdp.orders", partition=0, offset=1, key=None, value=None,
        reason=R.EMPTY_PAYLOAD, detail="x" * 10_000, now_ms=NOW,
    )  # fmt: skip
    decoded = CODEC.decode_record("DeadLetter", CODEC.encode_record("DeadLetter", record, fmt))
    assert decoded["value"] == b""
    assert decoded["key"] is None
    assert len(decoded["detail"]) == 2000


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_invalid_outputs_are_refused(fmt: OutputFormat) -> None:
    change = dict(OUTPUT_RECORDS["SegmentChange"], change="moved")
    with pytest.raises(ValueError, match="change: expected one of entered, exited"):
        CODEC.encode_record("SegmentChange", change, fmt)
    with pytest.raises(ValueError, match="payload"):
        CODEC.encode_record(
            "JourneyTrigger", dict(OUTPUT_RECORDS["JourneyTrigger"], payload="x"), fmt
        )
    event = EVENTS[EventKind.ORDER]
    bad = Event(event.kind, event.event_id, event.occurred_at, event.identity, {"total": 1.0})
    with pytest.raises(ValueError, match="order_id: required field is missing"):
        CODEC.encode_event(bad, fmt)


def test_decode_record_rejects_bad_input() -> None:
    dead = json.loads(
        CODEC.encode_record("DeadLetter", OUTPUT_RECORDS["DeadLetter"], OutputFormat.JSON)
    )
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_record("DeadLetter", as_json(dict(dead, value="not base64!")))
    assert caught.value.reason == R.SCHEMA_VIOLATION
    segment = CODEC.encode_record(
        "SegmentChange", OUTPUT_RECORDS["SegmentChange"], OutputFormat.AVRO
    )
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_record("DeadLetter", segment)
    assert caught.value.reason == R.WRONG_RECORD_TYPE


# --- properties -------------------------------------------------------------------------

FINGERPRINTS = [CODEC.fingerprint(kind.schema_name) for kind in EventKind]

raw_messages = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda fp, body: b"\xc3\x01" + fp + body, st.sampled_from(FINGERPRINTS), st.binary()),
    st.builds(lambda body: b"\x00" + body, st.binary(min_size=4)),
    st.builds(  # a valid Avro event with a few bytes overwritten
        lambda kind, at, junk: (lambda d: d[: at % len(d)] + junk + d[at % len(d) + len(junk) :])(
            CODEC.encode_event(EVENTS[kind])
        ),
        st.sampled_from(list(EventKind)),
        st.integers(min_value=10, max_value=400),
        st.binary(min_size=1, max_size=4),
    ),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def assert_decodes_cleanly(kind: EventKind, data: bytes) -> None:
    """``decode`` raises nothing but DecodeError, and whatever it accepts re-encodes exactly."""
    outcome: Event | DecodeError
    try:
        outcome = CODEC.decode(kind, data, now_ms=NOW)
    except DecodeError as error:
        outcome = error
    if isinstance(outcome, DecodeError):
        assert outcome.detail
        return
    event = outcome
    for fmt in OutputFormat:
        assert CODEC.decode(kind, CODEC.encode_event(event, fmt), now_ms=NOW) == event


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(EventKind)), data=raw_messages)
def test_decode_of_arbitrary_bytes_only_raises_decode_error(kind: EventKind, data: bytes) -> None:
    assert_decodes_cleanly(kind, data)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(EventKind)),
    field=st.sampled_from(
        ["event_id", "occurred_at", "identity", "url", "action", "items", "total", "status",
         "traits", "consent", "newsletter", "campaign_id", "message_id", "order_id", "currency"]
    ),
    value=json_values,
    drop=st.booleans(),
)  # fmt: skip
def test_decode_of_mutated_json_only_raises_decode_error(
    kind: EventKind, field: str, value: Any, drop: bool
) -> None:
    event = json.loads(CODEC.encode_event(EVENTS[kind], OutputFormat.JSON))
    if drop:
        event.pop(field, None)
    else:
        event[field] = value
    assert_decodes_cleanly(kind, as_json(event))


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(list(EventKind)), value=json_values)
def test_decode_of_arbitrary_json_only_raises_decode_error(kind: EventKind, value: Any) -> None:
    assert_decodes_cleanly(kind, as_json(value))


# --- the bad-input corpus (also sent through a real worker by the integration tests) ----

CORPUS_CODEC = Codec(SCHEMAS, max_event_bytes=bad_inputs.MAX_EVENT_BYTES)


@pytest.mark.parametrize("case", bad_inputs.corpus(CORPUS_CODEC), ids=lambda case: case.name)
def test_every_bad_input_gets_its_specific_reason(case: bad_inputs.BadInput) -> None:
    with pytest.raises(DecodeError) as caught:
        CORPUS_CODEC.decode(case.kind, case.value, now_ms=bad_inputs.NOW_MS)
    assert caught.value.reason.value == case.reason
    assert caught.value.detail


def test_the_corpus_is_distinct_and_large_enough() -> None:
    cases = bad_inputs.corpus(CORPUS_CODEC)
    assert len(cases) >= 40
    assert len({case.value for case in cases}) == len(cases)
    for kind in EventKind:
        event = CORPUS_CODEC.decode(kind, as_json(bad_inputs.valid(kind)), now_ms=bad_inputs.NOW_MS)
        assert event.kind is kind
