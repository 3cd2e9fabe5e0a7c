"""What every decoded event must be, whatever its format: an identity with at least one
usable identifier, and no text beyond the limits."""

from __future__ import annotations

from typing import Any

from streams.codec.errors import MAX_IDENTIFIER_CHARS, MAX_TEXT_CHARS, DeadLetterReason, DecodeError
from streams.events import Identity


def _clean_identifier(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def normalise_identity(raw: dict[str, Any]) -> Identity:
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


def check_text_lengths(value: Any, path: str) -> None:
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
