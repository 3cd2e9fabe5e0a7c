"""The demo's shopper model: deterministic, schema-exact, internally consistent traffic."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

import pytest

from streams.codec import Codec
from streams.demo.traffic import (
    ACTIONS,
    CATEGORIES,
    CURRENCY,
    DEFAULT_MIX,
    SITE,
    ShopperSimulation,
    parse_mix,
)
from streams.events import Event, EventKind
from streams.settings import PROJECT_ROOT

START = 1_732_350_000_000  # 2024-11-23T08:20:00Z
BODY_KEYS = {
    EventKind.PAGE_VIEW: {"url", "path", "title", "referrer", "category", "product_id", "action"},
    EventKind.ORDER: {"order_id", "status", "total", "currency", "items"},
    EventKind.EMAIL: {"campaign_id", "message_id", "action", "url", "category"},
    EventKind.IDENTIFY: {"traits", "newsletter", "consent"},
}
ITEM_KEYS = {"product_id", "category", "quantity", "unit_price", "starts_at", "ends_at"}
PRODUCT_ID = re.compile(r"^p-(toys|baking|gifts|garden|kitchen)-\d{3}$")


def _events(count: int = 10_000, **kwargs: Any) -> list[Event]:
    kwargs.setdefault("start_ms", START)
    return list(ShopperSimulation(**kwargs).stream(count))


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return _events(seed=7)


def test_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    first = [e.to_dict() for e in _events(3_000, seed=11)]
    again = [e.to_dict() for e in _events(3_000, seed=11)]
    other = [e.to_dict() for e in _events(3_000, seed=12)]
    assert first == again
    assert first != other


def test_next_events_with_a_live_clock_is_deterministic_and_never_in_the_future() -> None:
    def run() -> list[dict[str, Any]]:
        sim = ShopperSimulation(seed=5, shoppers=200)
        out: list[dict[str, Any]] = []
        for step in range(2_000):
            now = START + step * 10
            batch = sim.next_events(now)
            assert 1 <= len(batch) <= 4
            # Nothing is in the future; mail engagement is backdated at most a few hours.
            assert all(now - 5 * 3_600_000 <= e.occurred_at <= now for e in batch)
            out.extend(e.to_dict() for e in batch)
        return out

    assert run() == run()


def test_stream_yields_exactly_count_events_with_unique_ids(events: list[Event]) -> None:
    assert len(events) == 10_000
    assert len({e.event_id for e in events}) == len(events)
    assert all(isinstance(e.event_id, str) and len(e.event_id) == 36 for e in events)


def test_every_body_has_exactly_the_schema_keys_and_valid_values(events: list[Event]) -> None:
    seen: dict[str, set[Any]] = defaultdict(set)
    for event in events:
        body = event.body
        assert set(body) == BODY_KEYS[event.kind], event
        if event.kind is EventKind.PAGE_VIEW:
            assert body["action"] in {"view", "add_to_cart", "popup_shown"}
            assert body["url"] == SITE + body["path"]
            assert body["category"] in {*CATEGORIES, None}
            assert body["product_id"] is None or PRODUCT_ID.match(body["product_id"])
            if body["action"] == "add_to_cart":
                assert body["product_id"] is not None
            seen["page"].add(body["action"])
        elif event.kind is EventKind.ORDER:
            assert body["status"] in {"placed", "cancelled", "refunded"}
            assert body["currency"] == CURRENCY
            assert all(set(item) == ITEM_KEYS for item in body["items"])
            seen["order"].add(body["status"])
        elif event.kind is EventKind.EMAIL:
            assert body["action"] in {
                "delivered",
                "opened",
                "clicked",
                "bounced",
                "unsubscribed",
                "complained",
            }
            if body["action"] == "clicked":
                assert body["url"].startswith(SITE)
                assert body["category"] in CATEGORIES
            else:
                assert (body["url"], body["category"]) == (None, None)
            seen["email"].add(body["action"])
        else:
            traits, consent = body["traits"], body["consent"]
            assert body["newsletter"] in {"subscribed", "unsubscribed", None}
            assert traits is None or all(
                isinstance(k, str) and isinstance(v, str) for k, v in traits.items()
            )
            assert consent is None or all(isinstance(v, bool) for v in consent.values())
            if body["newsletter"] == "subscribed":
                assert consent is not None
                assert consent["email_marketing"] is True
                assert set(consent) == {"email_marketing", "personalization"}
                assert traits is not None
                assert traits["language"] in {"nl", "en", "de"}
            seen["newsletter"].add(body["newsletter"])
            seen["traits"].update(traits or ())
    # The stream exercises every value, not only the common ones.
    assert seen["page"] == {"view", "add_to_cart", "popup_shown"}
    assert seen["order"] == {"placed", "cancelled", "refunded"}
    assert seen["email"] >= {"delivered", "opened", "clicked", "bounced", "unsubscribed"}
    assert seen["newsletter"] == {"subscribed", "unsubscribed", None}
    assert seen["traits"] >= {"first_name", "last_name", "language", "interests", "birthday"}


def test_every_event_passes_the_codec_unchanged(events: list[Event]) -> None:
    codec = Codec(PROJECT_ROOT / "schemas")
    for event in events:
        wire = {
            "event_id": event.event_id,
            "occurred_at": event.occurred_at,
            "identity": event.identity.to_dict(),
            **event.body,
        }
        assert codec.decode(event.kind, json.dumps(wire).encode(), now_ms=START) == event


def test_identities_are_never_empty_and_emails_are_normalised(events: list[Event]) -> None:
    for event in events:
        assert event.identity.identifiers(), event
        email = event.identity.email
        assert email is None or (email == email.lower() and "@" in email)
        if event.kind is EventKind.EMAIL:
            # The ESP knows people by email only.
            assert (event.identity.anonymous_id, event.identity.user_id) == (None, None)


def test_mail_goes_only_to_people_who_signed_up_and_did_not_leave(events: list[Event]) -> None:
    subscribed: set[str] = set()
    mailed = 0
    for event in events:
        email = event.identity.email
        if event.kind is EventKind.IDENTIFY and event.body["newsletter"] == "subscribed":
            assert email is not None
            subscribed.add(email)
        elif event.kind is EventKind.EMAIL:
            assert email in subscribed, event
            mailed += 1
            if event.body["action"] in {"bounced", "unsubscribed", "complained"}:
                subscribed.discard(email)
    assert mailed > 1_000


def test_logins_link_user_id_email_and_device(events: list[Event]) -> None:
    logins = [
        e
        for e in events
        if e.kind is EventKind.IDENTIFY and e.identity.user_id and e.body["newsletter"] is None
    ]
    assert logins
    assert all(e.identity.email and e.identity.anonymous_id for e in logins)
    # After a login the device's page views carry the account id.
    logged_in = {e.identity.anonymous_id for e in logins}
    assert any(
        e.kind is EventKind.PAGE_VIEW
        and e.identity.user_id
        and e.identity.anonymous_id in logged_in
        for e in events
    )


def test_order_totals_add_up_and_changes_refer_to_placed_orders(events: list[Event]) -> None:
    prices = {p.product_id: p.price for p in ShopperSimulation(seed=7).catalogue}
    placed: dict[str, dict[str, Any]] = {}
    changes = 0
    for event in (e for e in events if e.kind is EventKind.ORDER):
        body = event.body
        items = body["items"]
        assert 1 <= len(items) <= 3
        assert all(item["quantity"] >= 1 for item in items)
        assert all(item["unit_price"] == prices[item["product_id"]] for item in items)
        assert all(item["product_id"].split("-")[1] == item["category"] for item in items)
        expected = sum(item["quantity"] * item["unit_price"] for item in items)
        assert body["total"] == pytest.approx(expected, abs=1e-9)
        assert body["total"] == round(body["total"], 2)
        if body["status"] == "placed":
            assert body["order_id"] not in placed
            placed[body["order_id"]] = body
        else:
            original = placed.pop(body["order_id"])
            assert (original["total"], original["items"]) == (body["total"], body["items"])
            changes += 1
    assert len(placed) > 200
    assert changes > 10


def test_interests_bias_views_enough_for_interest_segments_to_fire(events: list[Event]) -> None:
    views: Counter[tuple[str, str]] = Counter()
    for e in events:
        if e.kind is EventKind.PAGE_VIEW and e.body["category"] and e.identity.anonymous_id:
            views[(e.identity.anonymous_id, e.body["category"])] += 1
    qualified = {key for key, n in views.items() if n >= 3}
    assert len(qualified) > 100
    clicks = Counter(
        e.body["category"]
        for e in events
        if e.kind is EventKind.EMAIL and e.body["action"] == "clicked"
    )
    assert set(clicks) == set(CATEGORIES)


def test_the_default_mix_matches_its_weights_over_10k_events() -> None:
    sim = ShopperSimulation(seed=9, start_ms=START)
    list(sim.stream(10_000))
    steps = sum(sim.action_counts.values())
    total_weight = sum(DEFAULT_MIX.values())
    for action, weight in DEFAULT_MIX.items():
        share = sim.action_counts[action] / steps
        assert share == pytest.approx(weight / total_weight, abs=0.015), action


def test_a_mix_by_kind_shapes_the_event_kinds() -> None:
    events = _events(10_000, seed=3, mix={"page-view": 3, "order": 1})
    kinds = Counter(e.kind for e in events)
    assert set(kinds) == {EventKind.PAGE_VIEW, EventKind.ORDER}
    assert kinds[EventKind.ORDER] / len(events) == pytest.approx(0.25, abs=0.02)


def test_a_mix_of_mail_only_still_starts_from_sign_ups() -> None:
    events = _events(2_000, seed=3, mix={"email": 1})
    kinds = Counter(e.kind for e in events)
    assert kinds[EventKind.EMAIL] > 1_800
    assert kinds[EventKind.IDENTIFY] >= 1


@pytest.mark.parametrize(
    "mix",
    [{"nope": 1.0}, {"email": -1.0}, {"email": 0.0}, {}],
    ids=["unknown", "negative", "zero", "empty"],
)
def test_invalid_mixes_are_rejected(mix: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="mix"):
        ShopperSimulation(mix=mix)


def test_a_mix_is_written_as_name_weight_pairs() -> None:
    assert parse_mix("page-view=80, order=20") == {"page-view": 80.0, "order": 20.0}
    assert parse_mix("email=1.5,signup=0.5") == {"email": 1.5, "signup": 0.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("page-view", "'page-view' is not name=weight"),
        ("=3", "'=3' is not name=weight"),
        ("page-view=lots", "weight for 'page-view' is not a number: 'lots'"),
        ("order=1,order=2", "names 'order' twice"),
        ("nope=1", "unknown mix entry 'nope'"),
        ("order=-1", "negative"),
        ("order=0", "must not all be zero"),
    ],
)
def test_a_mix_that_cannot_be_used_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_mix(text)


def test_the_catalogue_and_actions_are_well_formed() -> None:
    catalogue = ShopperSimulation(seed=1).catalogue
    assert len({p.product_id for p in catalogue}) == len(catalogue) >= 50
    assert all(PRODUCT_ID.match(p.product_id) and p.price > 0 for p in catalogue)
    assert {p.category for p in catalogue} == set(CATEGORIES)
    assert set(DEFAULT_MIX) == set(ACTIONS)


def test_subscriber_emails_are_real_subscribers() -> None:
    sim = ShopperSimulation(seed=2, start_ms=START)
    subscribed = {
        e.identity.email
        for e in sim.stream(3_000)
        if e.kind is EventKind.IDENTIFY and e.body["newsletter"] == "subscribed"
    }
    emails = sim.subscriber_emails(3)
    assert len(emails) == 3
    assert set(emails) <= subscribed
