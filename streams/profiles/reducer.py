"""``apply(profile, event) -> profile``: fold one input event into a profile, purely.

Order independence where the domain allows it, because partitions, retries and producers
deliver out of order: counters commute, first/last are min/max of event times, and
statements (traits, consent, newsletter) carry their event time so the latest statement
wins whatever the arrival order; ties break on the value so the result is still unique.
What cannot commute: eviction from bounded lists and the cart (an add-to-cart that arrives
after the order that bought it puts the item back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.events import DEFAULT_CAPS, Event, EventKind, IdentifierCaps, Identity
from streams.profiles.model import (
    CART_ITEMS_LIMIT,
    CATEGORIES_LIMIT,
    EVENT_NAMES_LIMIT,
    PURCHASED_PRODUCTS_LIMIT,
    RECENT_EVENT_IDS_DEFAULT,
    RECENT_PRODUCTS_LIMIT,
    Consent,
    EventCount,
    ProductSeen,
    Profile,
    Stamped,
    Stay,
    bounded_stays,
    event_fingerprint,
    order_stay,
)


def apply(
    profile: Profile,
    event: Event,
    *,
    recent_ids: int = RECENT_EVENT_IDS_DEFAULT,
    caps: IdentifierCaps = DEFAULT_CAPS,
) -> Profile:
    """A new profile with ``event`` folded in; ``profile`` itself when the event was seen.

    ``profile`` is never mutated. ``recent_ids`` bounds the remembered event ids, and so
    how far back a replay is recognised. ``caps`` bound the identifier lists, the most
    recently seen kept; :mod:`streams.identity.identifiers` decides which identifiers may
    join at all, so callers that use it never reach the bound.
    """
    fingerprint = event_fingerprint(event.event_id)
    if fingerprint in profile.recent_event_ids:
        return profile
    p = profile.clone()
    p.recent_event_ids = remember(profile.recent_event_ids, fingerprint, recent_ids)
    _add_identity(p, event.identity, caps)
    at = event.occurred_at
    p.first_seen = _earliest(p.first_seen, at)
    p.last_seen = _latest(p.last_seen, at)
    _HANDLERS[event.kind](p, event.body, at)
    return p


# -- per kind: each receives a fresh clone and replaces (never mutates) containers --------


def _page_view(p: Profile, body: dict[str, Any], at: int) -> None:
    action = body.get("action")
    product = body.get("product_id")
    if action == "popup_shown":
        # An impression of our own pop-up, not the visitor's behaviour: no view counted.
        p.popup_shown_at = _latest(p.popup_shown_at, at)
        return
    p.page_views += 1
    category = body.get("category")
    if category:
        p.views_by_category = _bump(p.views_by_category, category, 1)
    if product:
        p.recent_products = _seen_product(p.recent_products, product, at)
        if action == "add_to_cart":
            if p.cart_items.get(product, -1) < at:
                cart = {**p.cart_items, product: at}
                p.cart_items = _evict_smallest(cart, product, CART_ITEMS_LIMIT)
            p.last_add_to_cart_at = _latest(p.last_add_to_cart_at, at)


def _order(p: Profile, body: dict[str, Any], at: int) -> None:
    status = body.get("status")
    total = float(body.get("total") or 0.0)
    if status == "placed":
        p.orders_placed += 1
        p.revenue += total
        p.first_order_at = _earliest(p.first_order_at, at)
        p.last_order_at = _latest(p.last_order_at, at)
        items = body.get("items") or ()
        products = [i["product_id"] for i in items if i.get("product_id")]
        if products:
            p.products_purchased = _front_unique(
                p.products_purchased, products, PURCHASED_PRODUCTS_LIMIT
            )
            # Only what was added before the order was bought with it.
            bought = {pid for pid in products if p.cart_items.get(pid, at + 1) <= at}
            if bought:
                p.cart_items = {k: v for k, v in p.cart_items.items() if k not in bought}
        categories = p.categories_purchased
        for item in items:
            if item.get("category"):
                categories = _bump(categories, item["category"], max(1, item.get("quantity") or 1))
        p.categories_purchased = categories
        starts, ends = order_stay(body)
        if starts is not None and ends is not None:
            stay = Stay(str(body.get("order_id")), starts, ends)
            p.stays = bounded_stays((*p.stays, stay), p.last_seen)
    elif status == "cancelled":
        p.orders_cancelled += 1
    elif status == "refunded":
        p.orders_refunded += 1
        p.revenue -= total
    if status in ("cancelled", "refunded") and p.stays:
        order = str(body.get("order_id"))
        p.stays = bounded_stays((s for s in p.stays if s.order_id != order), p.last_seen)


def _email(p: Profile, body: dict[str, Any], at: int) -> None:
    action = body.get("action")
    if action not in p.email_counts:
        return
    p.email_counts = {**p.email_counts, action: p.email_counts[action] + 1}
    if action == "opened":
        p.last_open_at = _latest(p.last_open_at, at)
    elif action == "clicked":
        p.last_click_at = _latest(p.last_click_at, at)
        if body.get("category"):
            p.clicked_categories = _bump(p.clicked_categories, body["category"], 1)
    elif action == "unsubscribed":
        _set_newsletter(p, "unsubscribed", at)


def _identify(p: Profile, body: dict[str, Any], at: int) -> None:
    traits = body.get("traits")
    if traits:
        updated = {
            k: Stamped(v, at)
            for k, v in traits.items()
            if v is not None and _newer((at, v), p.traits.get(k))
        }
        if updated:
            p.traits = {**p.traits, **updated}
    consent = body.get("consent")
    if consent:
        given = {
            k: Consent(bool(v), at)
            for k, v in consent.items()
            if v is not None and _newer((at, bool(v)), p.consent.get(k))
        }
        if given:
            p.consent = {**p.consent, **given}
    if body.get("newsletter"):
        _set_newsletter(p, body["newsletter"], at)


def _track(p: Profile, body: dict[str, Any], at: int) -> None:
    name = body.get("name")
    if not name:
        return
    seen = p.events.get(name)
    if seen is None:
        counted = EventCount(1, at)
    else:
        counted = EventCount(seen.times + 1, max(seen.last_at, at))
    p.events = bounded_events({**p.events, name: counted}, name)


def bounded_events(events: dict[str, EventCount], keep: str | None) -> dict[str, EventCount]:
    """The :data:`EVENT_NAMES_LIMIT` most frequent names (ties: the latest), sparing ``keep``
    so a new name can enter. ``events`` must be a fresh dict."""
    while len(events) > EVENT_NAMES_LIMIT:
        del events[min((k for k in events if k != keep), key=lambda k: (*events[k], k))]
    return events


_HANDLERS: dict[EventKind, Callable[[Profile, dict[str, Any], int], None]] = {
    EventKind.PAGE_VIEW: _page_view,
    EventKind.ORDER: _order,
    EventKind.EMAIL: _email,
    EventKind.IDENTIFY: _identify,
    EventKind.TRACK: _track,
}


# -- helpers ------------------------------------------------------------------------------


def _newer(statement: tuple[int, Any], current: tuple[Any, int] | None) -> bool:
    """Latest wins; on equal times the greater value wins, so arrival order never matters."""
    if current is None:
        return True
    value, current_at = current
    return statement > (current_at, value)


def _set_newsletter(p: Profile, status: str, at: int) -> None:
    current = None if p.newsletter_at is None else (p.newsletter, p.newsletter_at)
    if _newer((at, status), current):
        p.newsletter, p.newsletter_at = status, at


def _earliest(current: int | None, at: int) -> int:
    return at if current is None or at < current else current


def _latest(current: int | None, at: int) -> int:
    return at if current is None or at > current else current


def remember(seen: dict[str, None], key: str, limit: int) -> dict[str, None]:
    """``seen`` with ``key`` (an event fingerprint or a merge marker) added, the oldest
    dropped beyond ``limit``."""
    updated = dict(seen)
    updated[key] = None
    while len(updated) > limit:
        del updated[next(iter(updated))]
    return updated


def _add_identity(p: Profile, identity: Identity, caps: IdentifierCaps) -> None:
    if identity.anonymous_id:
        anonymous = [identity.anonymous_id]
        p.anonymous_ids = _front_unique(p.anonymous_ids, anonymous, caps.anonymous_ids)
    if identity.user_id:
        p.user_ids = _front_unique(p.user_ids, [identity.user_id], caps.user_ids)
    if identity.email:
        p.emails = _front_unique(p.emails, [identity.email], caps.emails)


def _front_unique(current: tuple[str, ...], new: list[str], limit: int) -> tuple[str, ...]:
    """``new`` moved to the front (in their order), duplicates dropped, oldest evicted."""
    if current[: len(new)] == tuple(new):
        return current  # the common case: the same visitor again, nothing to rebuild
    front = tuple(dict.fromkeys(new))
    return (front + tuple(x for x in current if x not in front))[:limit]


def _seen_product(
    current: tuple[ProductSeen, ...], product: str, at: int
) -> tuple[ProductSeen, ...]:
    """Unique by product, ordered by latest view time (not arrival), bounded."""
    for seen in current:
        if seen.product_id == product:
            if seen.at >= at:
                return current
            break
    kept = [s for s in current if s.product_id != product]
    kept.append(ProductSeen(product, at))
    kept.sort(key=lambda s: (-s.at, s.product_id))
    return tuple(kept[:RECENT_PRODUCTS_LIMIT])


def _bump(counts: dict[str, int], key: str, by: int) -> dict[str, int]:
    """Counts keeping the top :data:`CATEGORIES_LIMIT` keys."""
    return _evict_smallest({**counts, key: counts.get(key, 0) + by}, key, CATEGORIES_LIMIT)


def _evict_smallest(d: dict[str, int], keep: str, limit: int) -> dict[str, int]:
    """Drop the entry with the smallest value other than ``keep`` while over ``limit``.

    Sparing ``keep`` lets a new key always enter (a new interest, the latest cart item)
    instead of being evicted at once by its own small value. ``d`` must be a fresh dict.
    """
    while len(d) > limit:
        del d[min((k for k in d if k != keep), key=lambda k: (d[k], k))]
    return d
