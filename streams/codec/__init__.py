"""The wire format: Avro schemas from ``schemas/``, decoding and validation of input events,
encoding of events and output records.

Inputs are accepted as Avro single-object encoding, as Confluent wire format (when a schema
registry is configured) and as JSON objects validated against the same Avro schema. Whatever
cannot be decoded raises :class:`DecodeError` with a machine-readable reason, so the ingest
shell can dead-letter it. Schemas are parsed and compiled once, in :class:`Codec`'s
constructor; the per-message paths do no schema work.

Modules: ``errors`` (reasons, limits, the dead-letter record), ``schemas`` (loading and
fingerprints), ``json_check`` (JSON checked against Avro), ``event_checks`` (identity and text
limits of every event), ``registry`` (the schema-registry lookup), ``wire`` (:class:`Codec`).
"""

from streams.codec.errors import (
    MAX_DETAIL_CHARS,
    MAX_IDENTIFIER_CHARS,
    MAX_JSON_DEPTH,
    MAX_TEXT_CHARS,
    DeadLetterReason,
    DecodeError,
    dead_letter_record,
)
from streams.codec.schemas import NAMESPACE, SINGLE_OBJECT_MARKER
from streams.codec.wire import Codec

__all__ = [
    "MAX_DETAIL_CHARS",
    "MAX_IDENTIFIER_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_CHARS",
    "NAMESPACE",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "DeadLetterReason",
    "DecodeError",
    "dead_letter_record",
]
