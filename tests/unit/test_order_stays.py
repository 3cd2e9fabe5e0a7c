"""Order items with a stay (``starts_at`` / ``ends_at``): the schema evolved compatibly, and
the stay reaches the journeys."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from streams.codec import Codec, DecodeError
from streams.codec.schemas import SINGLE_OBJECT_MARKER, without_logical_types
from streams.events import EventKind
from streams.journeys.flow import stay_dates
from streams.settings import OutputFormat

SCHEMAS = Path(__file__).parents[2] / "schemas"
CODEC = Codec(SCHEMAS)
AT = 1_709_546_400_000
ORDER = {
    "event_id": "o-1",
    "occurred_at": AT,
    "identity": {"anonymous_id": None, "user_id": None, "email": "ann@example.com"},
    "order_id": "o-1",
    "status": "placed",
    "total": 500.0,
    "currency": "EUR",
}
LINE = {"product_id": "cabin", "category": "stay", "quantity": 1, "unit_price": 500.0}


def single_object(schema: dict[str, object], record: dict[str, object]) -> bytes:
    canonical = to_parsing_canonical_form(schema)
    buffer = io.BytesIO()
    buffer.write(SINGLE_OBJECT_MARKER + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))
    fastavro.schemaless_writer(buffer, parse_schema(without_logical_types(schema)), record)
    return buffer.getvalue()


def test_an_order_written_with_the_previous_schema_is_still_read() -> None:
    previous = json.loads((SCHEMAS / "previous" / "Order.1.avsc").read_text())
    data = single_object(previous, ORDER | {"items": [LINE]})
    event = CODEC.decode(EventKind.ORDER, data, now_ms=AT)
    assert event.body["items"] == [LINE | {"starts_at": None, "ends_at": None}]
    assert stay_dates(event) == ()


def test_a_stay_travels_in_avro_and_json_and_books_a_stay() -> None:
    line = LINE | {"starts_at": AT + 7 * 86_400_000, "ends_at": AT + 10 * 86_400_000}
    for fmt in OutputFormat:
        event = CODEC.decode(EventKind.ORDER, _encoded(line, fmt), now_ms=AT)
        assert event.body["items"] == [line]
        assert dict(stay_dates(event)) == {
            "stay_starts_at": AT + 7 * 86_400_000,
            "stay_ends_at": AT + 10 * 86_400_000,
        }


def _encoded(line: dict[str, object], fmt: OutputFormat) -> bytes:
    record = ORDER | {"items": [line]}
    if fmt is OutputFormat.JSON:
        return json.dumps(record).encode()
    return single_object(CODEC.schema("Order"), record)


def test_a_previous_schema_of_another_record_is_not_taken_for_an_order() -> None:
    previous = json.loads((SCHEMAS / "previous" / "Order.1.avsc").read_text())
    data = single_object(previous, ORDER | {"items": [LINE]})
    with pytest.raises(DecodeError):
        CODEC.decode(EventKind.PAGE_VIEW, data, now_ms=AT)
