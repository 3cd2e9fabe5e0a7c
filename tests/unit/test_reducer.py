"""The reducer: purity, idempotence, order independence, bounds.

Also the home of the event builders and hypothesis strategies the other core tests import.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import DEFAULT_CAPS, Event, EventKind, IdentifierCaps, Identity
from streams.profiles import model
from streams.profiles.model import CONSENT_HISTORY_LIMIT, ProductSeen, Profile
from streams.profiles.reducer import apply
from streams.segments.view import cel_view, flat_variables, ms_to_datetime

T0 = 1_700_000_000_000
_ids = itertools.count()


def event(
    kind: EventKind,
    body: dict[str, Any],
    *,
    at: int = T0,
    event_id: str | None = None,
    anon: str | None = "anon-1",
    user: str | None = None,
    email: str | None = None,
) -> Event:
    return Event(
        kind=kind,
        event_id=event_id or f"e{next(_ids)}",
        occurred_at=at,
        identity=Identity(anonymous_id=anon, user_id=user, email=email),
        body=body,
    )


def page_view(
    category: str | None = None, product: str | None = None, action: str = "view", **kw: Any
) -> Event:
    body = {"url": "https://shop/x", "path": "/x", "title": None, "referrer": None}
    body |= {"category": category, "product_id": product, "action": action}
    return event(EventKind.PAGE_VIEW, body, **kw)


def order(
    status: str = "placed",
    items: list[tuple[str, str | None]] | None = None,
    total: float = 10.0,
    order_id: str = "o-1",
    **kw: Any,
) -> Event:
    lines = [
        {"product_id": p, "category": c, "quantity": 1, "unit_price": 1.0} for p, c in (items or [])
    ]
    body = {"order_id": order_id, "status": status, "total": total, "currency": "EUR"}
    return event(EventKind.ORDER, body | {"items": lines}, **kw)


def email_event(action: str, category: str | None = None, **kw: Any) -> Event:
    body = {"campaign_id": "c", "message_id": "m", "action": action, "url": None}
    return event(EventKind.EMAIL, body | {"category": category}, **kw)


def identify(
    traits: dict[str, str] | None = None,
    newsletter: str | None = None,
    consent: dict[str, bool] | None = None,
    **kw: Any,
) -> Event:
    body = {"traits": traits, "newsletter": newsletter, "consent": consent}
    return event(EventKind.IDENTIFY, body, **kw)


# Caps no small pool of identifiers reaches: folds that evict nothing commute and merge.
WIDE_CAPS = IdentifierCaps(user_ids=10, emails=10, anonymous_ids=50)


def fold(events: list[Event], profile: Profile | None = None, **kw: Any) -> Profile:
    kw.setdefault("caps", WIDE_CAPS)
    p = profile or Profile.new("p-1")
    for e in events:
        p = apply(p, e, **kw)
    return p


# -- strategies -------------------------------------------------------------------------


def events_strategy(
    pool: int = 4, categories: int = 5, products: int = 8
) -> st.SearchStrategy[Event]:
    """Any input event over small pools, so values collide and interact."""
    at = st.integers(T0, T0 + 10**9)
    cat = st.sampled_from([f"cat{i}" for i in range(categories)] + [None])
    prod = st.sampled_from([f"prod{i}" for i in range(products)] + [None])
    ident = st.builds(
        Identity,
        anonymous_id=st.sampled_from([f"a{i}" for i in range(pool)] + [None]),
        user_id=st.sampled_from([f"u{i}" for i in range(pool)] + [None]),
        email=st.sampled_from([f"m{i}@x.io" for i in range(pool)] + [None]),
    )
    item = st.fixed_dictionaries(
        {
            "product_id": prod,
            "category": cat,
            "quantity": st.integers(1, 3),
            "unit_price": st.just(1.0),
        }
    )
    bodies = st.one_of(
        st.tuples(
            st.just(EventKind.PAGE_VIEW),
            st.fixed_dictionaries(
                {
                    "category": cat,
                    "product_id": prod,
                    "action": st.sampled_from(["view", "add_to_cart", "popup_shown"]),
                }
            ),
        ),
        st.tuples(
            st.just(EventKind.ORDER),
            st.fixed_dictionaries(
                {
                    "order_id": st.sampled_from(["o1", "o2"]),
                    "status": st.sampled_from(["placed", "cancelled", "refunded"]),
                    # Multiples of 1/4 add exactly in binary, so sums commute exactly.
                    "total": st.integers(0, 4000).map(lambda c: c / 4),
                    "currency": st.just("EUR"),
                    "items": st.lists(item, max_size=3),
                }
            ),
        ),
        st.tuples(
            st.just(EventKind.EMAIL),
            st.fixed_dictionaries(
                {"action": st.sampled_from(model.EMAIL_ACTIONS), "category": cat}
            ),
        ),
        st.tuples(
            st.just(EventKind.IDENTIFY),
            st.fixed_dictionaries(
                {
                    "traits": st.none()
                    | st.dictionaries(
                        st.sampled_from(["first_name", "language"]), st.sampled_from(["a", "b"])
                    ),
                    "newsletter": st.sampled_from([None, "subscribed", "unsubscribed"]),
                    "consent": st.none()
                    | st.dictionaries(st.sampled_from(["email_marketing", "ads"]), st.booleans()),
                }
            ),
        ),
    )
    return st.builds(
        lambda kb, ts, ident, n: Event(kb[0], f"ev-{n}", ts, ident, kb[1]),
        bodies,
        at,
        ident,
        st.uuids().map(str),
    )


def unique_events(**kw: Any) -> st.SearchStrategy[list[Event]]:
    return st.lists(events_strategy(**kw), max_size=30, unique_by=lambda e: e.event_id)


# -- unit tests -------------------------------------------------------------------------


def test_apply_does_not_mutate_its_input() -> None:
    p = fold([identify({"first_name": "Ann"}, "subscribed", {"email_marketing": True})])
    snapshot = p.to_dict()
    events = [
        page_view("toys", "p1", "add_to_cart"),
        order(items=[("p1", "toys")]),
        email_event("clicked", "toys"),
        identify({"first_name": "Bo"}, "unsubscribed", {"email_marketing": False}, at=T0 + 1),
    ]
    for e in events:
        assert apply(p, e) is not p
        assert p.to_dict() == snapshot


def test_seen_event_returns_the_same_object() -> None:
    e = page_view("toys")
    p = apply(Profile.new("p"), e)
    assert apply(p, e) is p
    assert apply(p, page_view("toys", event_id="other")) is not p


def test_identities_most_recent_first_and_unique() -> None:
    p = fold(
        [
            page_view(anon="a1"),
            page_view(anon="a2", email="x@y.z"),
            page_view(anon="a1", user="u1", email="w@y.z"),
        ]
    )
    assert p.anonymous_ids == ("a1", "a2")
    assert p.user_ids == ("u1",)
    assert p.emails == ("w@y.z", "x@y.z")
    assert p.email == "w@y.z"


def test_first_and_last_seen_use_event_time_not_arrival() -> None:
    p = fold([page_view(at=T0 + 5), page_view(at=T0 - 5), page_view(at=T0)])
    assert (p.first_seen, p.last_seen) == (T0 - 5, T0 + 5)


def test_latest_statement_wins_out_of_order() -> None:
    p = fold(
        [
            identify({"first_name": "New"}, "subscribed", {"email_marketing": True}, at=T0 + 10),
            identify(
                {"first_name": "Old", "language": "nl"},
                "unsubscribed",
                {"email_marketing": False},
                at=T0,
            ),
        ]
    )
    assert p.traits["first_name"].value == "New"
    assert p.traits["language"].value == "nl"
    assert p.newsletter == "subscribed"
    assert p.consented("email_marketing")
    assert not p.consented("ads")


def test_email_unsubscribe_unsubscribes_only_when_latest() -> None:
    p = fold([identify(newsletter="subscribed", at=T0), email_event("unsubscribed", at=T0 + 1)])
    assert (p.newsletter, p.newsletter_at) == ("unsubscribed", T0 + 1)
    p = fold([identify(newsletter="subscribed", at=T0 + 2)], p)
    assert p.newsletter == "subscribed"
    assert p.email_counts["unsubscribed"] == 1


def test_page_views_categories_and_recent_products() -> None:
    p = fold(
        [
            page_view("toys", "p1", at=T0),
            page_view("toys", "p2", at=T0 + 2),
            page_view("baking", "p1", at=T0 + 3),
            page_view("baking", "p3", at=T0 + 1),
        ]
    )
    assert p.page_views == 4
    assert p.views_by_category == {"toys": 2, "baking": 2}
    assert p.recent_products == (
        ProductSeen("p1", T0 + 3),
        ProductSeen("p2", T0 + 2),
        ProductSeen("p3", T0 + 1),
    )


def test_popup_impression_is_not_a_page_view() -> None:
    p = fold([page_view(action="popup_shown", at=T0 + 1), page_view(action="popup_shown", at=T0)])
    assert p.page_views == 0
    assert p.popup_shown_at == T0 + 1


def test_placed_order_clears_only_cart_items_it_contains() -> None:
    p = fold(
        [
            page_view("toys", "p1", "add_to_cart", at=T0),
            page_view("toys", "p2", "add_to_cart", at=T0 + 1),
        ]
    )
    assert set(p.cart_items) == {"p1", "p2"}
    assert p.last_add_to_cart_at == T0 + 1
    p = fold([order(items=[("p1", "toys"), ("p9", None)], at=T0 + 2)], p)
    assert set(p.cart_items) == {"p2"}
    assert p.last_add_to_cart_at == T0 + 1


def test_order_counters_revenue_and_purchases() -> None:
    p = fold(
        [
            order("placed", [("p1", "toys"), ("p2", None)], 30.0, at=T0 + 5),
            order("placed", [("p3", "toys")], 20.0, at=T0),
            order("refunded", [("p3", "toys")], 20.0, at=T0 + 9),
            order("cancelled", at=T0 + 9),
        ]
    )
    assert (p.orders_placed, p.orders_refunded, p.orders_cancelled) == (2, 1, 1)
    assert p.revenue == pytest.approx(30.0)
    assert (p.first_order_at, p.last_order_at) == (T0, T0 + 5)
    assert p.products_purchased == ("p3", "p1", "p2")
    assert p.categories_purchased == {"toys": 2}


def test_email_engagement() -> None:
    p = fold(
        [
            email_event("opened", at=T0 + 3),
            email_event("opened", at=T0 + 1),
            email_event("clicked", "toys", at=T0 + 2),
            email_event("bounced"),
            email_event("nonsense"),
        ]
    )
    assert p.email_counts == {
        "delivered": 0,
        "opened": 2,
        "clicked": 1,
        "bounced": 1,
        "unsubscribed": 0,
        "complained": 0,
    }
    assert (p.last_open_at, p.last_click_at) == (T0 + 3, T0 + 2)
    assert p.clicked_categories == {"toys": 1}


def test_category_counts_keep_top_n_and_let_new_keys_in() -> None:
    events = [page_view("big") for _ in range(3)]
    events += [page_view(f"c{i}") for i in range(model.CATEGORIES_LIMIT + 5)]
    p = fold(events)
    assert len(p.views_by_category) == model.CATEGORIES_LIMIT
    assert p.views_by_category["big"] == 3
    assert f"c{model.CATEGORIES_LIMIT + 4}" in p.views_by_category


def test_recent_event_ids_are_bounded_fifo() -> None:
    events = [page_view(event_id=f"id{i}") for i in range(20)]
    p = fold(events, recent_ids=16)
    assert list(p.recent_event_ids) == [model.event_fingerprint(f"id{i}") for i in range(4, 20)]
    assert apply(p, events[-1], recent_ids=16) is p


def test_storage_round_trip() -> None:
    p = fold(
        [
            identify({"first_name": "Ann"}, "subscribed", {"email_marketing": True}, email="a@b.c"),
            page_view("toys", "p1", "add_to_cart"),
            page_view(action="popup_shown"),
            order(items=[("p2", "toys")]),
            email_event("clicked", "toys"),
        ]
    )
    p.segments, p.segment_sequence, p.journeys = ("customer",), 3, {"welcome": {"w1": T0}}
    assert Profile.from_json(p.to_json()) == p
    assert Profile.from_dict(p.to_dict()).to_dict() == p.to_dict()


def test_cel_view_paths() -> None:
    p = fold([order(items=[("p1", "toys")]), email_event("opened")])
    full = cel_view(p)
    assert full["orders"]["count"] == 1
    assert cel_view(p, ["orders.count", "newsletter"]) == {
        "orders": {"count": 1},
        "newsletter": None,
    }
    assert cel_view(p, ["email"])["email"] == full["email"]
    assert full["last_seen"] == ms_to_datetime(T0)
    assert full["popup_shown_at"].timestamp() == 0
    assert flat_variables(p, ["orders.count", "email", "newsletter"]) == {
        "profile__orders__count": 1,
        "profile__email": full["email"],
        "profile__newsletter": None,
    }


# -- properties -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(unique_events(), st.data())
def test_replays_never_change_the_final_profile(events: list[Event], data: st.DataObject) -> None:
    replayed = list(events)
    for e in data.draw(st.lists(st.sampled_from(events), max_size=10) if events else st.just([])):
        replayed.insert(data.draw(st.integers(replayed.index(e) + 1, len(replayed))), e)
    assert fold(replayed) == fold(events)


def _commuting_view(p: Profile) -> dict[str, Any]:
    """Everything that must not depend on arrival order (small pools: no eviction)."""
    d = p.to_dict()
    for volatile in ("cart", "recent_event_ids"):
        d.pop(volatile)
    d["identities"] = {k: sorted(v) for k, v in d["identities"].items()}
    d["orders"]["products"] = sorted(d["orders"]["products"])
    d["orders"]["revenue"] = round(d["orders"]["revenue"], 6)
    d["cart_last_added_at"] = p.last_add_to_cart_at
    return d


@settings(max_examples=200, deadline=None)
@given(unique_events(), st.randoms(use_true_random=False))
def test_reordering_keeps_commuting_fields(events: list[Event], rnd: Any) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert _commuting_view(fold(shuffled)) == _commuting_view(fold(events))


@settings(max_examples=50, deadline=None)
@given(st.lists(events_strategy(pool=80, categories=60, products=120), min_size=50, max_size=300))
def test_bounded_lists_stay_bounded(events: list[Event]) -> None:
    p = Profile.new("p")
    for e in events:
        p = apply(p, e, recent_ids=16)
        assert len(p.anonymous_ids) <= DEFAULT_CAPS.anonymous_ids
        assert len(p.user_ids) <= DEFAULT_CAPS.user_ids
        assert len(p.emails) <= DEFAULT_CAPS.emails
        assert len(p.recent_products) <= model.RECENT_PRODUCTS_LIMIT
        assert len({s.product_id for s in p.recent_products}) == len(p.recent_products)
        assert len(p.products_purchased) <= model.PURCHASED_PRODUCTS_LIMIT
        assert len(set(p.products_purchased)) == len(p.products_purchased)
        assert len(p.cart_items) <= model.CART_ITEMS_LIMIT
        for counts in (p.views_by_category, p.categories_purchased, p.clicked_categories):
            assert len(counts) <= model.CATEGORIES_LIMIT
        assert len(p.recent_event_ids) <= 16


# -- consent history ----------------------------------------------------------------------


def test_every_consent_statement_is_kept_with_its_source_and_the_latest_decides() -> None:
    granted = identify(consent={"email_marketing": True, "ads": False}, at=T0, event_id="g")
    revoked = identify(consent={"email_marketing": False}, at=T0 + 2, event_id="r")
    late = identify(consent={"email_marketing": True}, at=T0 + 1, event_id="late")
    p = fold([granted, revoked, late])
    assert not p.consented("email_marketing")  # the latest statement, whatever came last
    assert [(c.at, c.purpose, c.granted, c.source, c.event_id) for c in p.consent_history] == [
        (T0, "ads", False, "identify", "g"),
        (T0, "email_marketing", True, "identify", "g"),
        (T0 + 1, "email_marketing", True, "identify", "late"),
        (T0 + 2, "email_marketing", False, "identify", "r"),
    ]
    assert fold([late, revoked, granted]).consent_history == p.consent_history
    assert Profile.from_json(p.to_json()) == p


@pytest.mark.parametrize("action", ["unsubscribed", "complained"])
def test_an_unsubscribe_or_complaint_revokes_email_marketing(action: str) -> None:
    p = fold([identify(consent={"email_marketing": True}), email_event(action, at=T0 + 1)])
    assert not p.consented("email_marketing")
    last = p.consent_history[-1]
    revoked = ("email_marketing", False, f"email.{action}")
    assert (last.purpose, last.granted, last.source) == revoked


def test_opens_and_clicks_say_nothing_about_consent() -> None:
    p = fold([identify(consent={"email_marketing": True}), email_event("clicked", at=T0 + 1)])
    assert p.consented("email_marketing")
    assert len(p.consent_history) == 1


def test_the_consent_history_keeps_the_newest_statements_within_its_bound() -> None:
    statements = [
        identify(consent={"ads": i % 2 == 0}, at=T0 + i) for i in range(CONSENT_HISTORY_LIMIT + 7)
    ]
    p = fold(statements)
    assert len(p.consent_history) == CONSENT_HISTORY_LIMIT
    assert p.consent_history[0].at == T0 + 7
    assert p.consent_history[-1].at == T0 + CONSENT_HISTORY_LIMIT + 6
    assert fold(list(reversed(statements))).consent_history == p.consent_history


def test_a_revocation_at_the_moment_of_a_grant_wins_in_any_order() -> None:
    grant = identify(consent={"ads": True}, at=T0)
    revoke = identify(consent={"ads": False}, at=T0)
    assert not fold([grant, revoke]).consented("ads")
    assert not fold([revoke, grant]).consented("ads")
