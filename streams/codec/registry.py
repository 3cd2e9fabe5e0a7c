"""Writer schemas of Confluent-format records, from a Confluent schema registry.

The lookup goes through the official client, ``confluent_kafka.schema_registry``. It is
imported at the first lookup rather than with the codec: importing it loads Authlib, a JOSE
library and a second HTTP library (httpx2), a noticeable share of a worker's start-up even
after Faust and librdkafka are loaded, and most processes never ask a registry.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastavro.schema import parse_schema

from streams.codec.errors import DeadLetterReason, DecodeError
from streams.codec.schemas import without_logical_types

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

# A failed lookup dead-letters one record, and the next record with that id asks again; a
# client retrying with back-off would only hold up the partition meanwhile.
_CLIENT_SETTINGS = {"timeout": 5, "max.retries": 0}


class SchemaRegistry:
    """Writer schemas by id, parsed for fastavro: one request per id for the life of the
    process (blocking, but only the first record with a new id waits for it)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: SchemaRegistryClient | None = None
        self._parsed: dict[int, Any] = {}

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id``; raises :class:`DecodeError`."""
        cached = self._parsed.get(schema_id)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError

        try:
            if self._client is None:
                self._client = SchemaRegistryClient({"url": self._url, **_CLIENT_SETTINGS})
        except Exception as exc:  # a malformed URL; the lookup fails as if it were unreachable
            raise self._failed(schema_id, exc) from None
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(
                    DeadLetterReason.UNKNOWN_FINGERPRINT,
                    f"schema id {schema_id} is not in the schema registry",
                ) from None
            raise DecodeError(
                DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
                f"schema registry answered {exc.http_status_code} for schema id {schema_id}",
            ) from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # An answer that is not a JSON object: whatever the server is, it holds no schema.
            raise self._unusable(schema_id, exc) from None
        # Transport errors (refused, reset, timed out) are the HTTP library's own exceptions,
        # and the client may use either httpx or its successor httpx2.
        except Exception as exc:
            raise self._failed(schema_id, exc) from None
        try:
            if schema.schema_type != "AVRO":
                raise ValueError(f"it is a {schema.schema_type} schema")
            parsed = parse_schema(without_logical_types(json.loads(schema.schema_str or "")))
        except Exception as exc:  # whatever the registry holds, it is not a usable schema
            raise self._unusable(schema_id, exc) from None
        self._parsed[schema_id] = parsed
        return parsed

    @staticmethod
    def _failed(schema_id: int, exc: Exception) -> DecodeError:
        return DecodeError(
            DeadLetterReason.SCHEMA_REGISTRY_UNAVAILABLE,
            f"schema registry request for id {schema_id} failed: {exc!r}",
        )

    @staticmethod
    def _unusable(schema_id: int, exc: Exception) -> DecodeError:
        return DecodeError(
            DeadLetterReason.INVALID_AVRO,
            f"schema id {schema_id} is not a usable Avro schema: {exc}"[:300],
        )
