"""Merging two profiles of one person: equivalence with folding, laws, guard, bounds, purity."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import DEFAULT_CAPS, Event
from streams.profiles import merge as merging
from streams.profiles import model
from streams.profiles.merge import MERGED_FIELDS, shared_event_ids
from streams.profiles.model import Consent, ProductSeen, Profile, Stamped, event_fingerprint
from tests.unit.test_reducer import (
    T0,
    WIDE_CAPS,
    email_event,
    events_strategy,
    fold,
    identify,
    order,
    page_view,
    unique_events,
)


def merge(into: Profile, other: Profile, **kw: Any) -> Profile:
    """Merge with the caps of :func:`fold` unless told otherwise."""
    kw.setdefault("caps", WIDE_CAPS)
    return merging.merge(into, other, **kw)


def _view(p: Profile) -> dict[str, Any]:
    """The fields a merge must reproduce exactly (small pools: nothing is evicted).

    Left out: the cart (it does not commute under the reducer either), the order of
    identities and purchased products (merged lists have no per-item times) and the
    remembered event ids (compared as sets).
    """
    d = p.to_dict()
    for volatile in ("profile_id", "cart", "recent_event_ids"):
        d.pop(volatile)
    d["identities"] = {k: sorted(v) for k, v in d["identities"].items()}
    d["orders"]["products"] = sorted(d["orders"]["products"])
    d["cart_last_added_at"] = p.last_add_to_cart_at
    d["event_ids"] = sorted(p.recent_event_ids)
    return d


def _split(events: list[Event], sides: list[int], n: int) -> list[list[Event]]:
    parts: list[list[Event]] = [[] for _ in range(n)]
    for e, side in zip(events, sides, strict=False):
        parts[side % n].append(e)
    return parts


def _sides(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, n - 1), min_size=30, max_size=30)


# -- (1) equivalence with folding the union -----------------------------------------------


@settings(max_examples=300, deadline=None)
@given(unique_events(), _sides(2))
def test_merging_folds_of_disjoint_events_equals_folding_the_union(
    events: list[Event], sides: list[int]
) -> None:
    a_events, b_events = _split(events, sides, 2)
    a, b = fold(a_events, Profile.new("a")), fold(b_events, Profile.new("b"))
    merged = merge(a, b)
    assert merged.profile_id == "a"
    assert _view(merged) == _view(fold(events))
    # Cart: union keeping the latest add time, never more than either side had.
    assert merged.cart_items.keys() <= a.cart_items.keys() | b.cart_items.keys()
    for product, at in merged.cart_items.items():
        assert at == max(a.cart_items.get(product, at), b.cart_items.get(product, at))


@settings(max_examples=200, deadline=None)
@given(unique_events(), _sides(2))
def test_merge_commutes_on_everything_but_the_id(events: list[Event], sides: list[int]) -> None:
    a_events, b_events = _split(events, sides, 2)
    a, b = fold(a_events, Profile.new("a")), fold(b_events, Profile.new("b"))
    ab, ba = merge(a, b), merge(b, a)
    assert (ab.profile_id, ba.profile_id) == ("a", "b")
    assert _view(ab) == _view(ba)
    assert ab.cart_items == ba.cart_items


# -- (2) associativity --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(unique_events(), _sides(3))
def test_merge_is_associative(events: list[Event], sides: list[int]) -> None:
    a, b, c = (fold(part, Profile.new(f"p{i}")) for i, part in enumerate(_split(events, sides, 3)))
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    assert _view(left) == _view(right)
    assert left.cart_items == right.cart_items
    assert left.profile_id == right.profile_id == "p0"


# -- (3) the double-counting guard ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(unique_events())
def test_merging_a_copy_changes_nothing(events: list[Event]) -> None:
    p = fold(events)
    assert merge(p, p.clone()) == p
    assert merge(p, Profile.from_dict(p.to_dict())) == p


@settings(max_examples=200, deadline=None)
@given(unique_events(), _sides(2))
def test_replaying_a_merge_changes_nothing(events: list[Event], sides: list[int]) -> None:
    a_events, b_events = _split(events, sides, 2)
    a, b = fold(a_events, Profile.new("a")), fold(b_events, Profile.new("b"))
    merged = merge(a, b)
    assert merge(merged, b) == merged
    assert merge(merged, a) == merged


@settings(max_examples=200, deadline=None)
@given(unique_events(), st.integers(0, 30))
def test_a_prefix_of_the_same_history_is_not_counted_again(events: list[Event], k: int) -> None:
    whole, prefix = fold(events), fold(events[:k], Profile.new("other"))
    for merged in (merge(whole, prefix), merge(prefix, whole)):
        assert _view(merged) == _view(whole)


def test_partial_overlap_counts_the_shared_events_twice() -> None:
    """Documented limit: a shared event's contribution cannot be subtracted."""
    shared = page_view("toys", event_id="shared")
    a = fold([page_view("toys", event_id="a1"), shared], Profile.new("a"))
    b = fold([shared, page_view("baking", event_id="b1")], Profile.new("b"))
    assert shared_event_ids(a, b) == {event_fingerprint("shared")}
    merged = merge(a, b)
    assert merged.page_views == 4
    assert merged.views_by_category == {"toys": 3, "baking": 1}
    assert set(merged.recent_event_ids) == {event_fingerprint(i) for i in ("a1", "b1", "shared")}


# -- (4) bounds ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(events_strategy(pool=80, categories=60, products=120), min_size=50, max_size=200),
    st.lists(events_strategy(pool=80, categories=60, products=120), min_size=50, max_size=200),
)
def test_bounds_hold_after_a_merge(a_events: list[Event], b_events: list[Event]) -> None:
    caps = DEFAULT_CAPS
    a = fold(a_events, Profile.new("a"), recent_ids=64, caps=caps)
    b = fold(b_events, Profile.new("b"), recent_ids=64, caps=caps)
    for merged, ids_limit in (
        (merge(a, b, recent_ids=64, caps=caps), 64),
        (merge(a, b, caps=caps), 128),
    ):
        assert len(merged.anonymous_ids) <= caps.anonymous_ids
        assert len(merged.user_ids) <= caps.user_ids
        assert len(merged.emails) <= caps.emails
        for ids in (merged.anonymous_ids, merged.user_ids, merged.emails):
            assert len(set(ids)) == len(ids)
        assert len(merged.recent_products) <= model.RECENT_PRODUCTS_LIMIT
        assert len({s.product_id for s in merged.recent_products}) == len(merged.recent_products)
        assert list(merged.recent_products) == sorted(
            merged.recent_products, key=lambda s: (-s.at, s.product_id)
        )
        assert len(merged.products_purchased) <= model.PURCHASED_PRODUCTS_LIMIT
        assert len(set(merged.products_purchased)) == len(merged.products_purchased)
        assert len(merged.cart_items) <= model.CART_ITEMS_LIMIT
        for counts in (
            merged.views_by_category,
            merged.categories_purchased,
            merged.clicked_categories,
        ):
            assert len(counts) <= model.CATEGORIES_LIMIT
        assert len(merged.recent_event_ids) <= ids_limit
        assert set(merged.email_counts) == set(model.EMAIL_ACTIONS)


def test_event_ids_keep_the_newest_of_both_sides() -> None:
    a = fold([page_view(event_id=f"a{i}") for i in range(10)], Profile.new("a"))
    b = fold([page_view(event_id=f"b{i}") for i in range(10)], Profile.new("b"))
    kept = list(merge(a, b, recent_ids=6).recent_event_ids)
    ids = {event_fingerprint(i): i for i in (f"{side}{n}" for side in "ab" for n in range(10))}
    assert sorted(ids[k] for k in kept) == ["a7", "a8", "a9", "b7", "b8", "b9"]
    # FIFO order: the newest last, ``into``'s newest last.
    assert [ids[k] for k in kept[-2:]] == ["b9", "a9"]


def test_bounded_merges_keep_the_most_recent_items() -> None:
    a = Profile(
        "a",
        last_seen=T0 + 1,
        emails=("new@x.io",),
        cart_items={f"p{i}": T0 + 2 * i for i in range(model.CART_ITEMS_LIMIT)},
        recent_products=tuple(ProductSeen(f"p{i}", T0 + 2 * i) for i in range(20))[::-1],
    )
    b = Profile(
        "b",
        last_seen=T0,
        emails=tuple(f"old{i}@x.io" for i in range(DEFAULT_CAPS.emails)),
        cart_items={f"q{i}": T0 + 2 * i + 1 for i in range(model.CART_ITEMS_LIMIT)},
        recent_products=tuple(ProductSeen(f"q{i}", T0 + 2 * i + 1) for i in range(20))[::-1],
    )
    merged = merge(b, a, caps=DEFAULT_CAPS)
    assert merged.email == "new@x.io"  # the more recently seen profile's address leads
    assert len(merged.emails) == DEFAULT_CAPS.emails
    assert min(merged.cart_items.values()) == T0 + model.CART_ITEMS_LIMIT
    assert [s.at for s in merged.recent_products] == [T0 + 39 - i for i in range(20)]


# -- statements, segments, journeys -------------------------------------------------------


def test_latest_statement_wins_and_ties_break_like_the_reducer() -> None:
    a = Profile(
        "a",
        traits={"language": Stamped("de", T0 + 5), "name": Stamped("Ann", T0)},
        consent={"ads": Consent(True, T0 + 5)},
        newsletter="subscribed",
        newsletter_at=T0,
    )
    b = Profile(
        "b",
        traits={"language": Stamped("nl", T0 + 9), "name": Stamped("Anna", T0)},
        consent={"ads": Consent(False, T0 + 5), "email_marketing": Consent(True, T0)},
        newsletter="unsubscribed",
        newsletter_at=T0 + 1,
    )
    for merged in (merge(a, b), merge(b, a)):
        assert merged.traits == {"language": Stamped("nl", T0 + 9), "name": Stamped("Anna", T0)}
        assert merged.consent == {
            "ads": Consent(False, T0 + 5),  # at equal times the revocation wins
            "email_marketing": Consent(True, T0),
        }
        assert (merged.newsletter, merged.newsletter_at) == ("unsubscribed", T0 + 1)
    # The reducer agrees on the tie: both statements folded into one profile.
    folded = fold([identify({"name": "Ann"}, at=T0), identify({"name": "Anna"}, at=T0)])
    assert folded.traits["name"] == Stamped("Anna", T0)


def test_consent_histories_merge_as_one_bounded_history_in_any_order() -> None:
    limit = model.CONSENT_HISTORY_LIMIT
    a = fold([identify(consent={"ads": True}, at=T0 + 2 * i) for i in range(limit)])
    b = fold([identify(consent={"ads": False}, at=T0 + 2 * i + 1) for i in range(limit)])
    b.profile_id = "b"
    merged = merge(a, b)
    assert merged.consent_history == merge(b, a).consent_history
    assert len(merged.consent_history) == limit
    # The newest of both sides, interleaved by event time.
    assert [c.at for c in merged.consent_history] == list(range(T0 + limit, T0 + 2 * limit))
    assert merged.consent_history == fold([*restated(a), *restated(b)]).consent_history
    assert not merged.consented("ads")  # the latest statement: b's at T0 + 2 * limit - 1


def restated(p: Profile) -> list[Event]:
    """Identify events stating ``p``'s consent history again."""
    return [
        identify(consent={c.purpose: c.granted}, at=c.at, event_id=c.event_id)
        for c in p.consent_history
    ]


def test_segments_stay_into_s_and_journeys_keep_the_earliest_step() -> None:
    a = Profile(
        "a",
        segments=("buyers",),
        segment_sequence=3,
        journeys={"welcome": {"start": T0 + 10, "day3": T0 + 20}},
    )
    b = Profile(
        "b",
        segments=("subscribers",),
        segment_sequence=7,
        journeys={"welcome": {"start": T0}, "winback": {"start": T0 + 5}},
    )
    merged = merge(a, b)
    assert merged.segments == ("buyers",)
    assert merged.segment_sequence == 7
    assert merged.journeys == {
        "welcome": {"start": T0, "day3": T0 + 20},
        "winback": {"start": T0 + 5},
    }


def test_counters_add() -> None:
    a = fold(
        [
            page_view("toys"),
            order(items=[("pram", "toys")], total=20.0),
            email_event("clicked", "baking"),
        ],
        Profile.new("a"),
    )
    b = fold(
        [
            order("refunded", total=5.0),
            order("cancelled"),
            email_event("opened"),
            page_view("toys", at=T0 - 1),
        ],
        Profile.new("b"),
    )
    merged = merge(a, b)
    assert merged.page_views == 2
    assert merged.views_by_category == {"toys": 2}
    assert (merged.orders_placed, merged.orders_cancelled, merged.orders_refunded) == (1, 1, 1)
    assert merged.revenue == 15.0
    assert merged.categories_purchased == {"toys": 1}
    assert merged.email_counts["clicked"] == merged.email_counts["opened"] == 1
    assert merged.clicked_categories == {"baking": 1}
    assert merged.first_seen == T0 - 1
    assert merged.last_seen == T0


# -- (5) purity ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(unique_events(), _sides(2), st.booleans())
def test_inputs_are_not_mutated(events: list[Event], sides: list[int], overlap: bool) -> None:
    a_events, b_events = _split(events, sides, 2)
    a = fold(a_events, Profile.new("a"))
    b = fold(b_events + (a_events[:3] if overlap else []), Profile.new("b"))
    a.journeys, b.journeys = {"j": {"s": T0 + 1}}, {"j": {"s": T0}, "k": {"s": T0}}
    before = (a.to_dict(), b.to_dict())
    merged = merge(a, b)
    merge(b, a)
    assert (a.to_dict(), b.to_dict()) == before
    assert merged.journeys["j"] is not a.journeys["j"]


def test_every_profile_field_is_merged() -> None:
    assert {f.name for f in fields(Profile)} == MERGED_FIELDS
