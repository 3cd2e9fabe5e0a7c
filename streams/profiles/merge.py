"""``merge(into, other) -> profile``: two profiles of the same person as one, purely.

Groundwork for identity resolution: when the identity graph learns that two profile ids
are one person, the shell folds ``other`` into ``into`` and then re-evaluates segments.

Field by field, mirroring what :func:`streams.profiles.reducer.apply` would have built
had every event of both profiles arrived at one profile:

- counters add (page views, category counts, orders, revenue, email counts);
  category counts stay bounded to the top :data:`~streams.profiles.model.CATEGORIES_LIMIT`;
- first/last timestamps are the min/max of both (``None`` means "never");
- statements (traits, consent, newsletter) keep the latest per key, ties broken exactly as
  the reducer breaks them (its ``_newer``), so ``merge`` commutes on them;
- bounded lists are unions within the model's limits (identifiers: within the caps, a
  safety net: :mod:`streams.identity.identifiers` refuses merges that would exceed them);
  identities and purchased products
  put the list of the more recent profile first (by ``last_seen`` / ``last_order_at``;
  ties go to ``into``), recent products keep the latest view per product ordered by view
  time, cart items keep the latest add time, recent event ids interleave the newest ids
  of both sides (they carry no time) so each side keeps its most recent ones;
- ``segments`` stay ``into``'s, with the fingerprint of the rules they were evaluated
  under and their recheck time, and ``segment_sequence`` is the max of both: the shell
  re-evaluates segments after a merge and emits the difference with a fresh sequence;
- stays are the union of both, one per order (``into``'s on a tie), bounded as the
  reducer bounds them;
- journey bookkeeping keeps, per journey and step, the earliest trigger time, so a person
  never receives a non-repeating journey twice because they once had two profiles.

Double counting. Counters cannot be un-added: a profile does not know what each event
contributed. The remembered event ids tell what can be detected:

- *one side subsumes the other*: every remembered id of one side is also remembered by
  the other (a copy of the same profile, a merge replayed after it was applied, a profile
  that is a prefix of the other). Then the subsumed side's events are already counted by
  the other side, and the counters are taken from the subsuming side instead of added.
  This makes ``merge`` idempotent under replays: ``merge(merge(a, b), b) == merge(a, b)``
  as long as ``b``'s ids survived the bound of the merged ids. The risk accepted: a side
  that evicted ids (more events than its ``recent_ids`` bound) may have applied evicted
  events the other side never saw; those are then not counted.
- *partial overlap*: some but not all ids are shared. The shared events' contribution is
  unknown, so the counters add and the shared events count twice. That should not happen
  (an event resolves to one profile); :func:`shared_event_ids` lets the shell measure it.

Neither input is mutated; the result may share (immutable-by-convention) containers with
them, as :meth:`~streams.profiles.model.Profile.clone` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import zip_longest
from typing import Any, TypeVar

from streams.events import DEFAULT_CAPS, IdentifierCaps
from streams.profiles.model import (
    CART_ITEMS_LIMIT,
    CATEGORIES_LIMIT,
    PURCHASED_PRODUCTS_LIMIT,
    RECENT_EVENT_IDS_DEFAULT,
    REFUSED_IDENTIFIERS_LIMIT,
    EventCount,
    Profile,
    bounded_stays,
)

# Private helpers of the reducer, reused on purpose so a merge breaks ties and bounds
# lists exactly as folding the events would.
from streams.profiles.reducer import (
    _evict_smallest,
    _front_unique,
    _newer,
    _seen_product,
    bounded_events,
)

_S = TypeVar("_S", bound=tuple[Any, int])

#: Every :class:`Profile` field :func:`merge` decides on (a test keeps it complete).
MERGED_FIELDS: frozenset[str] = frozenset(
    {
        "profile_id",
        "anonymous_ids",
        "user_ids",
        "emails",
        "traits",
        "consent",
        "newsletter",
        "newsletter_at",
        "first_seen",
        "last_seen",
        "page_views",
        "views_by_category",
        "recent_products",
        "cart_items",
        "last_add_to_cart_at",
        "popup_shown_at",
        "orders_placed",
        "orders_cancelled",
        "orders_refunded",
        "revenue",
        "first_order_at",
        "last_order_at",
        "products_purchased",
        "categories_purchased",
        "email_counts",
        "last_open_at",
        "last_click_at",
        "clicked_categories",
        "events",
        "stays",
        "segments",
        "segment_sequence",
        "segment_rules",
        "segment_recheck_at",
        "journeys",
        "journey_flows",
        "journey_due_at",
        "recent_event_ids",
        "refused_identifiers",
    }
)


def shared_event_ids(a: Profile, b: Profile) -> frozenset[str]:
    """Fingerprints (:func:`~streams.profiles.model.event_fingerprint`) of the events both
    profiles remember having applied."""
    return frozenset(a.recent_event_ids.keys() & b.recent_event_ids.keys())


def merge(
    into: Profile,
    other: Profile,
    *,
    recent_ids: int = RECENT_EVENT_IDS_DEFAULT,
    caps: IdentifierCaps = DEFAULT_CAPS,
) -> Profile:
    """One profile with ``into.profile_id`` holding what both profiles know.

    Neither input is mutated. ``recent_ids`` bounds the merged event ids and ``caps`` the
    identifiers, as in :func:`~streams.profiles.reducer.apply`. See the module docstring.
    """
    p = into.clone()
    _merge_counters(p, into, other)

    p.first_seen = _min(into.first_seen, other.first_seen)
    p.last_seen = _max(into.last_seen, other.last_seen)
    p.first_order_at = _min(into.first_order_at, other.first_order_at)
    p.last_order_at = _max(into.last_order_at, other.last_order_at)
    p.last_add_to_cart_at = _max(into.last_add_to_cart_at, other.last_add_to_cart_at)
    p.popup_shown_at = _max(into.popup_shown_at, other.popup_shown_at)
    p.last_open_at = _max(into.last_open_at, other.last_open_at)
    p.last_click_at = _max(into.last_click_at, other.last_click_at)

    p.traits = _latest_statements(into.traits, other.traits)
    p.consent = _latest_statements(into.consent, other.consent)
    if other.newsletter_at is not None:
        current = None if into.newsletter_at is None else (into.newsletter, into.newsletter_at)
        if _newer((other.newsletter_at, other.newsletter), current):
            p.newsletter, p.newsletter_at = other.newsletter, other.newsletter_at

    newer, older = _newer_first(into, other, into.last_seen, other.last_seen)
    p.anonymous_ids = _union(newer.anonymous_ids, older.anonymous_ids, caps.anonymous_ids)
    p.user_ids = _union(newer.user_ids, older.user_ids, caps.user_ids)
    p.emails = _union(newer.emails, older.emails, caps.emails)
    p.refused_identifiers = _still_refused(p, into.refused_identifiers, other.refused_identifiers)
    newer, older = _newer_first(into, other, into.last_order_at, other.last_order_at)
    p.products_purchased = _union(
        newer.products_purchased, older.products_purchased, PURCHASED_PRODUCTS_LIMIT
    )
    recent = into.recent_products
    for seen in other.recent_products:
        recent = _seen_product(recent, seen.product_id, seen.at)
    p.recent_products = recent
    p.cart_items = _latest_times(into.cart_items, other.cart_items, CART_ITEMS_LIMIT)
    p.stays = bounded_stays((*other.stays, *into.stays), p.last_seen)  # into's on a tie

    p.segment_sequence = max(into.segment_sequence, other.segment_sequence)
    p.journeys = _earliest_steps(into.journeys, other.journeys)
    p.journey_flows, p.journey_due_at = _journey_flows(into.journey_flows, other.journey_flows)
    p.recent_event_ids = _merge_event_ids(into, other, recent_ids)
    return p


# -- counters ---------------------------------------------------------------------------


def _subsumes(big: Profile, small: Profile) -> bool:
    """Every event ``small`` remembers was applied to ``big`` too (see module docstring)."""
    ids = small.recent_event_ids
    return bool(ids) and ids.keys() <= big.recent_event_ids.keys()


def _merge_counters(p: Profile, into: Profile, other: Profile) -> None:
    if _subsumes(into, other):
        return  # ``p`` is a clone of ``into``: its counters already count ``other``'s events
    if _subsumes(other, into):
        _copy_counters(p, other)
        return
    p.page_views = into.page_views + other.page_views
    p.views_by_category = _add_counts(into.views_by_category, other.views_by_category)
    p.orders_placed = into.orders_placed + other.orders_placed
    p.orders_cancelled = into.orders_cancelled + other.orders_cancelled
    p.orders_refunded = into.orders_refunded + other.orders_refunded
    p.revenue = into.revenue + other.revenue
    p.categories_purchased = _add_counts(into.categories_purchased, other.categories_purchased)
    p.email_counts = _add_counts(into.email_counts, other.email_counts, limit=None)
    p.clicked_categories = _add_counts(into.clicked_categories, other.clicked_categories)
    p.events = _add_events(into.events, other.events)


def _add_events(a: Mapping[str, EventCount], b: Mapping[str, EventCount]) -> dict[str, EventCount]:
    """Per-name sums and latest times, the most frequent names kept."""
    summed = dict(a)
    for name, seen in b.items():
        mine = summed.get(name)
        if mine is not None:
            seen = EventCount(mine.times + seen.times, max(mine.last_at, seen.last_at))
        summed[name] = seen
    return bounded_events(summed, None)


def _copy_counters(p: Profile, source: Profile) -> None:
    p.page_views = source.page_views
    p.views_by_category = source.views_by_category
    p.orders_placed = source.orders_placed
    p.orders_cancelled = source.orders_cancelled
    p.orders_refunded = source.orders_refunded
    p.revenue = source.revenue
    p.categories_purchased = source.categories_purchased
    p.email_counts = source.email_counts
    p.clicked_categories = source.clicked_categories
    p.events = source.events


def _add_counts(
    a: Mapping[str, int], b: Mapping[str, int], limit: int | None = CATEGORIES_LIMIT
) -> dict[str, int]:
    """Per-key sums, keeping the ``limit`` largest (ties: the greater key survives)."""
    summed = dict(a)
    for key, count in b.items():
        summed[key] = summed.get(key, 0) + count
    return _bounded(summed, limit)


def _bounded(d: dict[str, int], limit: int | None) -> dict[str, int]:
    if limit is None or len(d) <= limit:
        return d
    top = max(d, key=lambda k: (d[k], k))
    return _evict_smallest(d, top, limit)


# -- the rest ---------------------------------------------------------------------------


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _latest_statements(a: Mapping[str, _S], b: Mapping[str, _S]) -> dict[str, _S]:
    """Per key the newer statement (``(value, at)`` tuples), ties as the reducer breaks them."""
    merged = dict(a)
    for key, statement in b.items():
        value, at = statement
        if _newer((at, value), merged.get(key)):
            merged[key] = statement
    return merged


def _newer_first(
    into: Profile, other: Profile, into_at: int | None, other_at: int | None
) -> tuple[Profile, Profile]:
    """``(newer, older)`` by the given times; ``into`` leads on ties and ``None``s."""
    if other_at is not None and (into_at is None or other_at > into_at):
        return other, into
    return into, other


def _union(newer: tuple[str, ...], older: tuple[str, ...], limit: int) -> tuple[str, ...]:
    """``newer`` first, then what only ``older`` has, bounded."""
    if not older:
        return newer[:limit]
    return _front_unique(older, list(newer), limit)


def _latest_times(a: Mapping[str, int], b: Mapping[str, int], limit: int) -> dict[str, int]:
    """Per key the latest time; over ``limit`` the oldest entries go."""
    merged = dict(a)
    for key, at in b.items():
        if merged.get(key, at - 1) < at:
            merged[key] = at
    return _bounded(merged, limit)


def _earliest_steps(
    a: Mapping[str, Mapping[str, int]], b: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    merged = {journey: dict(steps) for journey, steps in a.items()}
    for journey, steps in b.items():
        mine = merged.setdefault(journey, {})
        for step, at in steps.items():
            if step not in mine or at < mine[step]:
                mine[step] = at
    return merged


def _journey_flows(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Both sides' journey books as one (see streams.journeys.flow.Book): ``a``'s state of
    a journey both are in, the other's states beside it, the sends of both (caps count them
    all), the higher sequence; and the earliest step due in it."""
    if not b:
        merged = dict(a)
    else:
        states = {**b.get("states", {}), **a.get("states", {})}
        sent = sorted({tuple(s) for s in [*a.get("sent", ()), *b.get("sent", ())]})
        sequence = max(a.get("sequence", 0), b.get("sequence", 0))
        merged = {"states": states, "sent": [list(s) for s in sent], "sequence": sequence}
    dues = [
        s["due_at"]
        for s in merged.get("states", {}).values()
        if s.get("position") is not None and s.get("due_at") is not None
    ]
    return merged, min(dues, default=None)


def _still_refused(p: Profile, a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, str]:
    """Both sides' refusals, except identifiers the merged profile now holds."""
    held = set(p.identifier_keys())
    merged = {k: v for k, v in {**b, **a}.items() if k not in held}
    return dict(list(merged.items())[-REFUSED_IDENTIFIERS_LIMIT:])


def _merge_event_ids(into: Profile, other: Profile, limit: int) -> dict[str, None]:
    """Union of remembered ids, bounded, keeping the newest of each side (FIFO order)."""
    if _subsumes(into, other) and len(into.recent_event_ids) <= limit:
        return into.recent_event_ids
    if _subsumes(other, into) and len(other.recent_event_ids) <= limit:
        return other.recent_event_ids
    picked: dict[str, None] = {}
    for pair in zip_longest(reversed(into.recent_event_ids), reversed(other.recent_event_ids)):
        for event_id in pair:
            if event_id is not None and len(picked) < limit:
                picked[event_id] = None
        if len(picked) >= limit:
            break
    return dict.fromkeys(reversed(picked))
