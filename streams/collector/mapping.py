"""Segment's Tracking API messages mapped to cdp-streams input events, purely.

Plain data in, plain data out: one Segment message (a dict as parsed from the request body),
the time the collector received it and the source its write key names, to either an
:class:`~streams.events.Event` for one of the input topics or a :class:`Rejection` with a
message for the response's error list. The table of what maps to what is docs/collector.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from streams.codec.errors import MAX_IDENTIFIER_CHARS
from streams.events import Event, EventKind, Identity
from streams.settings import DEFAULT_CATEGORY_PATTERN

# Segment's documented limits of its HTTP Tracking API.
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
# Segment's e-commerce spec: the currency when an order names none.
DEFAULT_CURRENCY = "USD"
# Names a track event may have in the Track topic's map of properties, and values' length.
MAX_PROPERTIES = 100


class MessageType(StrEnum):
    """Segment's message types; the value is the ``type`` field and the route's name."""

    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    GROUP = "group"


# analytics.js (analytics-next) posts single messages to one-letter routes.
SHORT_ROUTES = {
    "t": MessageType.TRACK,
    "i": MessageType.IDENTIFY,
    "p": MessageType.PAGE,
    "s": MessageType.SCREEN,
    "a": MessageType.ALIAS,
    "g": MessageType.GROUP,
}

ECOMMERCE_PAGE_ACTIONS = {"Product Viewed": "view", "Product Added": "add_to_cart"}
ORDER_STATUSES = {
    "Order Completed": "placed",
    "Order Cancelled": "cancelled",
    "Order Refunded": "refunded",
}
EMAIL_ACTIONS = {
    "Email Delivered": "delivered",
    "Email Opened": "opened",
    "Email Link Clicked": "clicked",
    "Email Bounced": "bounced",
    "Unsubscribed": "unsubscribed",
    "Email Marked as Spam": "complained",
}
# Traits that become part of the identify event itself, not profile traits.
_SPECIAL_TRAITS = frozenset({"email", "consent", "newsletter"})


class Rejection(StrEnum):
    """Why one message was refused (the ``reason`` in the response's error list)."""

    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_IDENTITY = "missing_identity"
    INVALID_FIELD = "invalid_field"
    TOO_LARGE = "too_large"
    INVALID_TIMESTAMP = "invalid_timestamp"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Rejection
    message: str
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Mapped:
    event: Event
    message_type: MessageType

    @property
    def outcome(self) -> str:
        """The input kind the message became (a metric label)."""
        return self.event.kind.value


Id = str | int | float | None


def _identifier(value: Id) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    # analytics-python accepts numeric ids and sends them as numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class SegmentMessage(BaseModel):
    """The fields of a Segment message that the mapping reads; any others are ignored."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    type: str | None = None
    message_id: str | None = None
    anonymous_id: Id = None
    user_id: Id = None
    previous_id: Id = None
    group_id: Id = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None

    @field_validator("anonymous_id", "user_id", "previous_id", "group_id", mode="before")
    @classmethod
    def _id_scalar(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | int | float):
            raise ValueError("must be a string")
        return value


@dataclass(frozen=True, slots=True)
class Rules:
    """How the collector maps what Segment leaves open."""

    # A page's category from its URL path when ``properties.category`` is absent: the
    # pattern's ``category`` group, e.g. ``/category/baking/...`` -> ``baking``.
    category_pattern: re.Pattern[str] = re.compile(DEFAULT_CATEGORY_PATTERN)


DEFAULT_RULES = Rules()


def parse_timestamp(value: str | None) -> int | None:
    """Epoch milliseconds of an ISO-8601 time; None when absent; ValueError when not a time."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return int(parsed.timestamp() * 1000)


def corrected_time(timestamp: int | None, sent_at: int | None, received_at: int) -> int:
    """When it happened on the collector's clock: ``receivedAt - (sentAt - timestamp)``.

    The client's clock may be off by hours; the difference between two readings of that same
    clock (when it happened, when it was sent) is not.
    """
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)


def category_of_path(path: str | None, rules: Rules) -> str | None:
    if not path:
        return None
    found = rules.category_pattern.search(path)
    return found.group("category") if found else None


def _text(value: Any) -> str | None:
    """A property as text: strings as they are, numbers and booleans as JSON, else None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return None


def _text_map(values: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Values as strings (Avro maps of string): objects and lists as compact JSON."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if key in skip or value is None:
            continue
        out[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return out


def _number(value: Any, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _InvalidFieldError(f"{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise _InvalidFieldError(f"{name} must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _InvalidFieldError(f"{name} must be a finite number")
    return number


class _InvalidFieldError(ValueError):
    pass


def event_id_for(message: dict[str, Any], source: str) -> str:
    """``messageId``; without one, a digest of the message itself, so a client's retry of
    the same message gets the same id and the worker drops the duplicate."""
    given = message.get("messageId")
    if isinstance(given, str) and given.strip():
        return given.strip()
    digest = hashlib.blake2b(
        orjson.dumps(message, option=orjson.OPT_SORT_KEYS) + source.encode(), digest_size=16
    )
    return f"seg-{digest.hexdigest()}"


def map_message(
    raw: Any,
    *,
    received_at: int,
    route_type: MessageType | None = None,
    batch_sent_at: str | None = None,
    batch_context: dict[str, Any] | None = None,
    encoded_size: int = 0,
    source: str = "",
    rules: Rules = DEFAULT_RULES,
) -> Mapped | Refused:
    """One Segment message as an input event, or why it is refused.

    ``route_type`` is the type the route implies (``/v1/track``); a batch's messages carry
    their own. ``encoded_size`` is the message's size in the request, checked against
    Segment's 32 KB per event.
    """
    if not isinstance(raw, dict):
        return Refused(Rejection.NOT_AN_OBJECT, "each message must be a JSON object")
    given_id = raw.get("messageId")
    message_id = given_id if isinstance(given_id, str) else None
    if encoded_size > MAX_EVENT_BYTES:
        return Refused(
            Rejection.TOO_LARGE,
            f"message of {encoded_size} bytes exceeds the limit of {MAX_EVENT_BYTES} (32 KB)",
            message_id,
        )
    try:
        message = SegmentMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return Refused(Rejection.INVALID_FIELD, f"{where}: {first['msg']}".lower(), message_id)
    kind_name = message.type or (route_type.value if route_type else None)
    try:
        message_type = MessageType(kind_name) if kind_name else None
    except ValueError:
        message_type = None
    if message_type is None:
        return Refused(
            Rejection.UNKNOWN_TYPE,
            f"type must be one of {', '.join(t.value for t in MessageType)}, got {kind_name!r}",
            message_id,
        )
    context = {**(batch_context or {}), **(message.context or {})}
    identity = _identity(message, message_type, context)
    if isinstance(identity, Refused):
        return Refused(identity.reason, identity.message, message_id)
    try:
        timestamp = parse_timestamp(message.timestamp or message.original_timestamp)
        sent_at = parse_timestamp(message.sent_at or batch_sent_at)
    except ValueError as exc:
        return Refused(Rejection.INVALID_TIMESTAMP, f"timestamp: {exc}", message_id)
    occurred_at = corrected_time(timestamp, sent_at, received_at)
    if occurred_at < 0:
        return Refused(Rejection.INVALID_TIMESTAMP, "timestamp is before 1970", message_id)
    event_id = event_id_for(raw, source)
    try:
        kind, body = _body(message, message_type, context, rules)
    except _InvalidFieldError as exc:
        return Refused(Rejection.INVALID_FIELD, str(exc), message_id)
    return Mapped(Event(kind, event_id, occurred_at, identity, body), message_type)


def _identity(
    message: SegmentMessage, message_type: MessageType, context: dict[str, Any]
) -> Identity | Refused:
    user_id = _identifier(message.user_id)
    anonymous_id = _identifier(message.anonymous_id)
    if message_type is MessageType.ALIAS:
        # alias says: previousId (often the anonymous id before sign-up) is userId.
        anonymous_id = _identifier(message.previous_id) or anonymous_id
        if user_id is None or anonymous_id is None:
            return Refused(Rejection.MISSING_IDENTITY, "alias needs userId and previousId")
    if user_id is None and anonymous_id is None:
        return Refused(Rejection.MISSING_IDENTITY, "userId or anonymousId is required")
    email = _email(message, context)
    for name, value in (("userId", user_id), ("anonymousId", anonymous_id), ("email", email)):
        if value is not None and len(value) > MAX_IDENTIFIER_CHARS:
            return Refused(
                Rejection.INVALID_FIELD, f"{name} is longer than {MAX_IDENTIFIER_CHARS} characters"
            )
    return Identity(anonymous_id=anonymous_id, user_id=user_id, email=email)


def _email(message: SegmentMessage, context: dict[str, Any]) -> str | None:
    for traits in (message.traits, context.get("traits")):
        if isinstance(traits, dict):
            email = traits.get("email")
            if isinstance(email, str) and "@" in email:
                return email.strip().lower() or None
    return None


def _body(
    message: SegmentMessage,
    message_type: MessageType,
    context: dict[str, Any],
    rules: Rules,
) -> tuple[EventKind, dict[str, Any]]:
    properties = message.properties or {}
    if message_type is MessageType.PAGE:
        return EventKind.PAGE_VIEW, _page(message, properties, context, rules)
    if message_type is MessageType.SCREEN:
        name = message.name or _text(properties.get("name")) or "screen"
        return EventKind.PAGE_VIEW, {
            **_page_body(f"screen:{name}", None, name, None, properties.get("category")),
        }
    if message_type is MessageType.IDENTIFY:
        return EventKind.IDENTIFY, _identify(message.traits or {}, context)
    if message_type is MessageType.ALIAS:
        return EventKind.IDENTIFY, {"traits": None, "newsletter": None, "consent": None}
    if message_type is MessageType.GROUP:
        group = _identifier(message.group_id)
        if group is None:
            raise _InvalidFieldError("group needs a groupId")
        traits = {"group_id": group}
        group_name = _text((message.traits or {}).get("name"))
        if group_name:
            traits["group_name"] = group_name
        return EventKind.IDENTIFY, {"traits": traits, "newsletter": None, "consent": None}
    return _track(message, properties, context, rules)


def _page_body(
    url: str,
    path: str | None,
    title: str | None,
    referrer: str | None,
    category: Any,
    product_id: str | None = None,
    action: str = "view",
) -> dict[str, Any]:
    return {
        "url": url,
        "path": path,
        "title": title,
        "referrer": referrer,
        "category": _text(category),
        "product_id": product_id,
        "action": action,
    }


def _page(
    message: SegmentMessage,
    properties: dict[str, Any],
    context: dict[str, Any],
    rules: Rules,
) -> dict[str, Any]:
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    assert isinstance(page, dict)
    url = _text(properties.get("url")) or _text(page.get("url"))
    path = _text(properties.get("path")) or _text(page.get("path"))
    name = message.name or _text(properties.get("name"))
    if url is None:
        url = path or (f"page:{name}" if name else None)
    if url is None:
        raise _InvalidFieldError("page needs properties.url, context.page.url, a path or a name")
    if path is None and "://" in url:
        path = "/" + url.split("://", 1)[1].partition("/")[2]
    title = _text(properties.get("title")) or _text(page.get("title")) or name
    referrer = _text(properties.get("referrer")) or _text(page.get("referrer"))
    category = properties.get("category") or message.category or category_of_path(path, rules)
    return _page_body(url, path, title, referrer, category)


def _track(
    message: SegmentMessage,
    properties: dict[str, Any],
    context: dict[str, Any],
    rules: Rules,
) -> tuple[EventKind, dict[str, Any]]:
    name = (message.event or "").strip()
    if not name:
        raise _InvalidFieldError("track needs an event name")
    if name in ECOMMERCE_PAGE_ACTIONS:
        product = _text(
            properties.get("product_id") or properties.get("sku") or properties.get("id")
        )
        if product is None:
            raise _InvalidFieldError(f"{name} needs properties.product_id")
        page = context.get("page") if isinstance(context.get("page"), dict) else {}
        assert isinstance(page, dict)
        url = _text(properties.get("url")) or _text(page.get("url")) or f"product:{product}"
        path = _text(page.get("path"))
        category = properties.get("category") or category_of_path(path, rules)
        return EventKind.PAGE_VIEW, _page_body(
            url,
            path,
            _text(properties.get("name")),
            _text(page.get("referrer")),
            category,
            product,
            ECOMMERCE_PAGE_ACTIONS[name],
        )
    if name in ORDER_STATUSES:
        return EventKind.ORDER, _order(properties, ORDER_STATUSES[name], name)
    if name in EMAIL_ACTIONS:
        return EventKind.EMAIL, _email_engagement(message, properties, EMAIL_ACTIONS[name])
    return EventKind.TRACK, {
        "name": name,
        "properties": _text_map(dict(list(properties.items())[:MAX_PROPERTIES])) or None,
    }


def _order(properties: dict[str, Any], status: str, name: str) -> dict[str, Any]:
    order_id = _text(properties.get("order_id") or properties.get("checkout_id"))
    if order_id is None:
        raise _InvalidFieldError(f"{name} needs properties.order_id")
    items: list[dict[str, Any]] = []
    products = properties.get("products") or []
    if not isinstance(products, list):
        raise _InvalidFieldError("properties.products must be a list")
    for index, product in enumerate(products):
        if not isinstance(product, dict):
            raise _InvalidFieldError(f"properties.products[{index}] must be an object")
        product_id = _text(product.get("product_id") or product.get("sku") or product.get("id"))
        if product_id is None:
            raise _InvalidFieldError(f"properties.products[{index}] needs a product_id")
        quantity = _number(product.get("quantity", 1), f"products[{index}].quantity")
        items.append(
            {
                "product_id": product_id,
                "category": _text(product.get("category")),
                "quantity": max(1, int(quantity)),
                "unit_price": _number(product.get("price"), f"products[{index}].price"),
            }
        )
    total = properties.get("total", properties.get("revenue"))
    if total is None:
        amount = float(sum(item["quantity"] * item["unit_price"] for item in items))
    else:
        amount = _number(total, "properties.total")
    currency = _text(properties.get("currency")) or DEFAULT_CURRENCY
    return {
        "order_id": order_id,
        "status": status,
        "total": amount,
        "currency": currency.upper(),
        "items": items,
    }


def _email_engagement(
    message: SegmentMessage, properties: dict[str, Any], action: str
) -> dict[str, Any]:
    campaign = _text(properties.get("campaign_id") or properties.get("campaign_name"))
    email_id = _text(properties.get("email_id") or properties.get("message_id"))
    return {
        "campaign_id": campaign or "unknown",
        "message_id": email_id or message.message_id or "unknown",
        "action": action,
        "url": _text(properties.get("link_url")) if action == "clicked" else None,
        "category": _text(properties.get("category") or properties.get("link_category")),
    }


def _identify(traits: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    consent = _consent(context.get("consent")) or _consent(traits.get("consent"))
    newsletter = traits.get("newsletter")
    status = None
    if newsletter in (True, "subscribed", "true", "yes"):
        status = "subscribed"
    elif newsletter in (False, "unsubscribed", "false", "no"):
        status = "unsubscribed"
    return {
        "traits": _text_map(traits, _SPECIAL_TRAITS) or None,
        "newsletter": status,
        "consent": consent or None,
    }


def _consent(raw: Any) -> dict[str, bool]:
    """Consent per purpose: Segment's ``{"categoryPreferences": {...}}`` or a flat map."""
    if not isinstance(raw, dict):
        return {}
    preferences = raw.get("categoryPreferences", raw)
    if not isinstance(preferences, dict):
        return {}
    return {str(k): v for k, v in preferences.items() if isinstance(v, bool)}
