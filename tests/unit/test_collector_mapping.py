"""The Segment mapping (streams.collector.mapping), and custom events on the profile."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streams.collector.mapping import (
    MAX_EVENT_BYTES,
    Mapped,
    MessageType,
    Refused,
    Rejection,
    Rules,
    corrected_time,
    map_message,
)
from streams.events import Event, EventKind, Identity
from streams.profiles.merge import merge
from streams.profiles.model import EVENT_NAMES_LIMIT, Profile
from streams.profiles.reducer import apply
from streams.segments.definitions import load_segments
from streams.segments.evaluator import evaluate
from streams.settings import compile_category_pattern

NOW = 1_700_000_000_000
ISO_NOW = "2023-11-14T22:13:20.000Z"  # NOW


def mapped(message: dict[str, Any], **kw: Any) -> Event:
    result = map_message(message, received_at=NOW, **kw)
    assert isinstance(result, Mapped), result
    return result.event


def refused(message: Any, **kw: Any) -> Refused:
    result = map_message(message, received_at=NOW, **kw)
    assert isinstance(result, Refused), result
    return result


def test_clock_skew_is_corrected_by_the_clients_own_difference() -> None:
    # The client's clock is an hour behind: it stamped the event 2 s before it sent it.
    event = mapped(
        {
            "type": "page",
            "messageId": "m1",
            "anonymousId": "a1",
            "timestamp": "2023-11-14T21:13:18.000Z",
            "sentAt": "2023-11-14T21:13:20.000Z",
            "properties": {"url": "https://shop.example/"},
        }
    )
    assert event.occurred_at == NOW - 2000
    assert corrected_time(None, None, NOW) == NOW
    assert corrected_time(NOW - 5, None, NOW) == NOW - 5
    # A batch's sentAt applies to every message in it.
    event = mapped(
        {
            "type": "page",
            "anonymousId": "a",
            "timestamp": "2023-11-14T21:13:19.000Z",
            "properties": {"url": "u"},
        },
        batch_sent_at="2023-11-14T21:13:20.000Z",
    )
    assert event.occurred_at == NOW - 1000


def test_page_maps_to_a_page_view_with_the_category_from_the_path_rule() -> None:
    event = mapped(
        {
            "type": "page",
            "messageId": "m1",
            "anonymousId": "anon-1",
            "userId": "u-1",
            "context": {
                "page": {
                    "url": "https://shop.example/category/baking/cakes",
                    "path": "/category/baking/cakes",
                    "title": "Cakes",
                    "referrer": "https://mail.example/",
                },
                "traits": {"email": "Ann@Example.com"},
            },
        }
    )
    assert event.kind is EventKind.PAGE_VIEW
    assert event.event_id == "m1"
    assert event.occurred_at == NOW
    assert event.identity == Identity(anonymous_id="anon-1", user_id="u-1", email="ann@example.com")
    assert event.body == {
        "url": "https://shop.example/category/baking/cakes",
        "path": "/category/baking/cakes",
        "title": "Cakes",
        "referrer": "https://mail.example/",
        "category": "baking",
        "product_id": None,
        "action": "view",
    }
    # properties.category wins over the rule; a configured rule replaces the default.
    rules = Rules(compile_category_pattern(r"^/shop/(?P<category>[a-z]+)"))
    body = mapped(
        {"type": "page", "anonymousId": "a", "properties": {"url": "https://x/shop/toys/1"}},
        rules=rules,
    ).body
    assert body["category"] == "toys"
    assert body["path"] == "/shop/toys/1"
    body = mapped(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {"url": "https://x/shop/toys", "category": "gifts"},
        },
        rules=rules,
    ).body
    assert body["category"] == "gifts"


def test_ecommerce_spec() -> None:
    viewed = mapped(
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": "a",
            "properties": {"product_id": "sku-1", "category": "toys", "name": "Doll's pram"},
        }
    )
    assert viewed.kind is EventKind.PAGE_VIEW
    assert (viewed.body["product_id"], viewed.body["action"]) == ("sku-1", "view")
    assert viewed.body["category"] == "toys"
    added = mapped(
        {
            "type": "track",
            "event": "Product Added",
            "anonymousId": "a",
            "properties": {"sku": "sku-2"},
        }
    )
    assert (added.body["product_id"], added.body["action"]) == ("sku-2", "add_to_cart")
    order = mapped(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "properties": {
                "order_id": "o-1",
                "total": 30.5,
                "currency": "eur",
                "products": [
                    {"product_id": "p1", "price": 10, "quantity": 2, "category": "baking"},
                    {"sku": "p2", "price": "10.5"},
                ],
            },
        }
    )
    assert order.kind is EventKind.ORDER
    assert order.body == {
        "order_id": "o-1",
        "status": "placed",
        "total": 30.5,
        "currency": "EUR",
        "items": [
            {"product_id": "p1", "category": "baking", "quantity": 2, "unit_price": 10.0},
            {"product_id": "p2", "category": None, "quantity": 1, "unit_price": 10.5},
        ],
    }
    for name, status in (("Order Cancelled", "cancelled"), ("Order Refunded", "refunded")):
        body = mapped(
            {"type": "track", "event": name, "userId": "u1", "properties": {"order_id": "o-1"}}
        ).body
        assert (body["status"], body["currency"], body["total"]) == (status, "USD", 0.0)
    # Without a total, the products' sum.
    body = mapped(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "properties": {"order_id": "o-2", "products": [{"id": "p", "price": 4, "quantity": 3}]},
        }
    ).body
    assert body["total"] == 12.0


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("Email Delivered", "delivered"),
        ("Email Opened", "opened"),
        ("Email Link Clicked", "clicked"),
        ("Email Bounced", "bounced"),
        ("Unsubscribed", "unsubscribed"),
        ("Email Marked as Spam", "complained"),
    ],
)
def test_email_spec(name: str, action: str) -> None:
    event = mapped(
        {
            "type": "track",
            "event": name,
            "userId": "u1",
            "properties": {
                "campaign_id": "c-7",
                "email_id": "e-9",
                "link_url": "https://shop.example/baking",
                "category": "baking",
            },
        }
    )
    assert event.kind is EventKind.EMAIL
    assert event.body == {
        "campaign_id": "c-7",
        "message_id": "e-9",
        "action": action,
        "url": "https://shop.example/baking" if action == "clicked" else None,
        "category": "baking",
    }


def test_identify_with_consent_newsletter_and_traits() -> None:
    event = mapped(
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a1",
            "traits": {
                "email": "ann@example.com",
                "first_name": "Ann",
                "age": 41,
                "interests": ["baking", "toys"],
                "newsletter": True,
            },
            "context": {
                "consent": {"categoryPreferences": {"email_marketing": True, "ads": False}}
            },
        }
    )
    assert event.kind is EventKind.IDENTIFY
    assert event.identity.email == "ann@example.com"
    assert event.body == {
        "traits": {"first_name": "Ann", "age": "41", "interests": '["baking","toys"]'},
        "newsletter": "subscribed",
        "consent": {"email_marketing": True, "ads": False},
    }
    # traits.consent, a flat map, when the context has none.
    body = mapped(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"consent": {"email_marketing": False}, "newsletter": "unsubscribed"},
        }
    ).body
    assert body == {
        "traits": None,
        "newsletter": "unsubscribed",
        "consent": {"email_marketing": False},
    }


def test_alias_links_the_previous_id_and_group_sets_a_trait() -> None:
    alias = mapped({"type": "alias", "userId": "u1", "previousId": "anon-9"})
    assert alias.kind is EventKind.IDENTIFY
    assert alias.identity == Identity(anonymous_id="anon-9", user_id="u1")
    group = mapped({"type": "group", "userId": 42, "groupId": "acme", "traits": {"name": "Acme"}})
    assert group.identity.user_id == "42"
    assert group.body["traits"] == {"group_id": "acme", "group_name": "Acme"}


def test_other_track_events_go_to_the_track_topic() -> None:
    event = mapped(
        {
            "type": "track",
            "event": "Brochure Requested",
            "anonymousId": "a",
            "properties": {"region": "north", "pages": 12, "nested": {"x": 1}},
        }
    )
    assert event.kind is EventKind.TRACK
    assert event.body == {
        "name": "Brochure Requested",
        "properties": {"region": "north", "pages": "12", "nested": '{"x":1}'},
    }
    # The route's type applies when the message has none.
    event = mapped({"event": "Signed Up", "anonymousId": "a"}, route_type=MessageType.TRACK)
    assert event.kind is EventKind.TRACK


def test_a_message_without_an_id_gets_one_that_a_retry_repeats() -> None:
    message = {"type": "track", "event": "X", "anonymousId": "a", "timestamp": ISO_NOW}
    first = mapped(dict(message), source="web")
    again = mapped(dict(message), source="web")
    other = mapped({**message, "event": "Y"}, source="web")
    assert first.event_id == again.event_id != other.event_id
    assert re.fullmatch(r"seg-[0-9a-f]{32}", first.event_id)


@pytest.mark.parametrize(
    ("message", "reason", "words"),
    [
        ([1, 2], Rejection.NOT_AN_OBJECT, "json object"),
        ({"type": "track", "event": "X"}, Rejection.MISSING_IDENTITY, "userid or anonymousid"),
        ({"type": "track", "event": "X", "userId": "  "}, Rejection.MISSING_IDENTITY, "userid"),
        ({"type": "bogus", "userId": "u"}, Rejection.UNKNOWN_TYPE, "type must be one of"),
        ({"userId": "u"}, Rejection.UNKNOWN_TYPE, "none"),
        ({"type": "track", "userId": "u"}, Rejection.INVALID_FIELD, "event name"),
        ({"type": "track", "event": "X", "userId": {"a": 1}}, Rejection.INVALID_FIELD, "userid"),
        (
            {"type": "track", "event": "X", "userId": "u", "properties": []},
            Rejection.INVALID_FIELD,
            "properties",
        ),
        (
            {"type": "page", "userId": "u", "timestamp": "yesterday"},
            Rejection.INVALID_TIMESTAMP,
            "timestamp",
        ),
        (
            {"type": "page", "userId": "u", "timestamp": "2023-11-14T10:00:00"},
            Rejection.INVALID_TIMESTAMP,
            "time zone",
        ),
        ({"type": "page", "userId": "u"}, Rejection.INVALID_FIELD, "page needs"),
        (
            {"type": "track", "event": "Order Completed", "userId": "u"},
            Rejection.INVALID_FIELD,
            "order_id",
        ),
        (
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "properties": {"order_id": "o", "total": "lots"},
            },
            Rejection.INVALID_FIELD,
            "number",
        ),
        (
            {"type": "track", "event": "Product Viewed", "userId": "u"},
            Rejection.INVALID_FIELD,
            "product_id",
        ),
        ({"type": "alias", "userId": "u"}, Rejection.MISSING_IDENTITY, "previousid"),
        ({"type": "group", "userId": "u"}, Rejection.INVALID_FIELD, "groupid"),
        (
            {"type": "track", "event": "X", "userId": "u" * 600},
            Rejection.INVALID_FIELD,
            "longer than",
        ),
    ],
)
def test_refusals_say_why(message: Any, reason: Rejection, words: str) -> None:
    found = refused(message)
    assert found.reason is reason
    assert words in found.message.lower()


def test_a_message_over_32_kb_is_refused_with_its_id() -> None:
    found = refused(
        {"type": "track", "event": "X", "userId": "u", "messageId": "big"},
        encoded_size=MAX_EVENT_BYTES + 1,
    )
    assert (found.reason, found.message_id) == (Rejection.TOO_LARGE, "big")


# -- custom events on the profile -------------------------------------------------------


def track(name: str, at: int, event_id: str, user: str = "u1") -> Event:
    return Event(EventKind.TRACK, event_id, at, Identity(user_id=user), {"name": name})


def test_the_profile_counts_custom_events_by_name_bounded() -> None:
    profile = Profile.new("p_1")
    profile = apply(profile, track("Brochure Requested", NOW, "e1"))
    profile = apply(profile, track("Brochure Requested", NOW - 10, "e2"))
    profile = apply(profile, track("Brochure Requested", NOW - 10, "e2"))  # a replay
    assert profile.events["Brochure Requested"] == (2, NOW)
    # Round trip through storage; a profile stored before the field has none.
    assert Profile.from_json(profile.to_json()).events == profile.events
    old = profile.to_dict()
    del old["events"]
    assert Profile.from_dict(old).events == {}
    # Bounded: the rarest names go, a new name always gets in.
    for index in range(EVENT_NAMES_LIMIT + 5):
        profile = apply(profile, track(f"name-{index}", NOW, f"n{index}"))
    assert len(profile.events) == EVENT_NAMES_LIMIT
    assert "Brochure Requested" in profile.events
    assert f"name-{EVENT_NAMES_LIMIT + 4}" in profile.events


def test_merging_profiles_adds_their_event_counts() -> None:
    a = apply(Profile.new("p_a"), track("Brochure Requested", NOW, "e1"))
    b = apply(Profile.new("p_b"), track("Brochure Requested", NOW + 5, "e2"))
    b = apply(b, track("Quote Asked", NOW, "e3"))
    merged = merge(a, b)
    assert merged.events == {"Brochure Requested": (2, NOW + 5), "Quote Asked": (1, NOW)}


def test_segment_expressions_read_event_counts(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(
        "segments:\n"
        "  - name: brochure_fans\n"
        '    when: \'"Brochure Requested" in profile.events && '
        'profile.events["Brochure Requested"].count >= 2\'\n'
    )
    definitions = load_segments(path)
    profile = apply(Profile.new("p_1"), track("Brochure Requested", NOW, "e1"))
    assert evaluate(definitions, profile, NOW).members == frozenset()
    profile = apply(profile, track("Brochure Requested", NOW, "e2"))
    result = evaluate(definitions, profile, NOW)
    assert result.errors == {}
    assert result.members == frozenset({"brochure_fans"})
