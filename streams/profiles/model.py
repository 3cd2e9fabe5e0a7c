"""The profile: one customer view, as plain data.

Ownership convention (what keeps :func:`streams.profiles.reducer.apply` pure and cheap):
a :class:`Profile` that has been handed out is never mutated. Bounded lists are tuples
and therefore immutable; dicts are replaced, never changed in place, by whoever derives a
new profile from :meth:`Profile.clone`. A clone shares every container with its source
until one is replaced, so deriving a profile costs a few microseconds, not a deep copy.

Timestamps are epoch milliseconds (``int``); ``None`` means "never happened".
"""

from __future__ import annotations

import base64
import hashlib
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import orjson

from streams.events import IdentifierKind, identifier_key

# 2: events are remembered by fingerprint (event_fingerprint), not by their full id.
# 3: segment_recheck_at; segments stored before it are evaluated in full at the next change.
# 4: events (custom events by name); profiles stored before it have none.
# 5: consent_history; profiles stored before it have none.
SCHEMA_VERSION = 5
MERGE_MARKER_PREFIX = "merge:"

RECENT_PRODUCTS_LIMIT = 20
PURCHASED_PRODUCTS_LIMIT = 50
CART_ITEMS_LIMIT = 50
CATEGORIES_LIMIT = 30
RECENT_EVENT_IDS_DEFAULT = 512
REFUSED_IDENTIFIERS_LIMIT = 64
# Custom event names counted per profile: the most frequent kept, so a client sending a
# new name per event cannot grow a profile without bound.
EVENT_NAMES_LIMIT = 50
# Booked stays kept per profile (current and upcoming; past ones are dropped).
STAYS_LIMIT = 8
# Consent statements kept as proof, the newest by event time: a person who toggles a purpose
# daily still shows the last months of it, and a profile cannot grow without bound.
CONSENT_HISTORY_LIMIT = 50
# The purpose an email unsubscribe or complaint revokes: the one the shipped journeys need.
EMAIL_MARKETING = "email_marketing"

EMAIL_ACTIONS = ("delivered", "opened", "clicked", "bounced", "unsubscribed", "complained")


class Stamped(NamedTuple):
    """A trait value with the event time of the statement that set it."""

    value: str
    at: int


class Consent(NamedTuple):
    granted: bool
    at: int


class ConsentChange(NamedTuple):
    """One consent statement, kept for proof: when, which purpose, given or revoked, and the
    event that said so. Fields in sort order: a history is sorted by event time, and the
    rest makes the order unique whatever order the statements arrived in."""

    at: int
    purpose: str
    granted: bool
    source: str  # "identify", "email.unsubscribed", "email.complained"
    event_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "purpose": self.purpose,
            "granted": self.granted,
            "source": self.source,
            "event_id": self.event_id,
        }


class EventCount(NamedTuple):
    """How often a custom event happened to a profile, and when last (event time)."""

    times: int  # not `count`: that is tuple's method
    last_at: int


class ProductSeen(NamedTuple):
    product_id: str
    at: int


class Stay(NamedTuple):
    """A stay (or event date) an order booked: its items' earliest start, latest end."""

    order_id: str
    starts_at: int
    ends_at: int


def order_stay(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """An order's earliest item ``starts_at`` and latest ``ends_at`` (None: no item has one)."""
    items = body.get("items") or ()
    starts = [int(i["starts_at"]) for i in items if i.get("starts_at") is not None]
    ends = [int(i["ends_at"]) for i in items if i.get("ends_at") is not None]
    return min(starts, default=None), max(ends, default=None)


def stay_ends(stays: Iterable[Stay], at: int) -> int | None:
    """When the stay current at ``at`` ends (the latest of those current); None: none is."""
    return max((s.ends_at for s in stays if s.starts_at <= at < s.ends_at), default=None)


def next_stay_start(stays: Iterable[Stay], at: int) -> int | None:
    """The first start of a stay after ``at``; None: none is booked."""
    return min((s.starts_at for s in stays if s.starts_at > at), default=None)


def bounded_stays(stays: Iterable[Stay], after: int | None) -> tuple[Stay, ...]:
    """``stays`` without those over by ``after``, by start, the STAYS_LIMIT latest-ending
    kept; one per order."""
    by_order = {s.order_id: s for s in stays if after is None or s.ends_at > after}
    kept = sorted(by_order.values(), key=lambda s: (-s.ends_at, s.order_id))[:STAYS_LIMIT]
    return tuple(sorted(kept, key=lambda s: (s.starts_at, s.order_id)))


def _empty_email_counts() -> dict[str, int]:
    return dict.fromkeys(EMAIL_ACTIONS, 0)


@dataclass(slots=True)
class Profile:
    profile_id: str
    # Identities, most recently seen first.
    anonymous_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    traits: dict[str, Stamped] = field(default_factory=dict)
    consent: dict[str, Consent] = field(default_factory=dict)
    # Every consent statement (the newest CONSENT_HISTORY_LIMIT), oldest first.
    consent_history: tuple[ConsentChange, ...] = ()
    newsletter: str | None = None
    newsletter_at: int | None = None
    first_seen: int | None = None
    last_seen: int | None = None
    # Web behaviour.
    page_views: int = 0
    views_by_category: dict[str, int] = field(default_factory=dict)
    recent_products: tuple[ProductSeen, ...] = ()  # newest `at` first, unique product ids
    cart_items: dict[str, int] = field(default_factory=dict)  # product id -> last added ms
    last_add_to_cart_at: int | None = None
    popup_shown_at: int | None = None
    # Orders.
    orders_placed: int = 0
    orders_cancelled: int = 0
    orders_refunded: int = 0
    revenue: float = 0.0
    first_order_at: int | None = None
    last_order_at: int | None = None
    products_purchased: tuple[str, ...] = ()  # most recently processed first
    categories_purchased: dict[str, int] = field(default_factory=dict)
    # Email engagement.
    email_counts: dict[str, int] = field(default_factory=_empty_email_counts)
    last_open_at: int | None = None
    last_click_at: int | None = None
    clicked_categories: dict[str, int] = field(default_factory=dict)
    # Custom events (the track topic): name -> count and last time, top EVENT_NAMES_LIMIT.
    events: dict[str, EventCount] = field(default_factory=dict)
    # Booked stays not over by the latest event, by start (bounded_stays).
    stays: tuple[Stay, ...] = ()
    # Derived state owned by streams.steps.process.
    segments: tuple[str, ...] = ()  # sorted
    segment_sequence: int = 0
    # Fingerprint of the segment definitions `segments` was evaluated under
    # (streams.segments.evaluator.fingerprint); "" before the first evaluation.
    segment_rules: str = ""
    # Wall-clock ms from which a time-based segment may have changed with no change to the
    # profile (streams.segments.clock); None: no such instant is ahead.
    segment_recheck_at: int | None = None
    journeys: dict[str, dict[str, int]] = field(default_factory=dict)  # journey -> step -> ms
    # The flow engine's book (streams.journeys.flow.Book.to_dict): each journey's state, the
    # sends within the cap windows, the journey-event sequence. Plain data, owned there.
    journey_flows: dict[str, Any] = field(default_factory=dict)
    # Event-time ms at which a journey step is due (a wait ends, a deferred send's slot).
    journey_due_at: int | None = None
    # Fingerprints of the last applied events (event_fingerprint) and markers of merges
    # (MERGE_MARKER_PREFIX). A dict, not a tuple: O(1) membership, and insertion order
    # gives FIFO eviction.
    recent_event_ids: dict[str, None] = field(default_factory=dict)
    # Identifier key ("email:ann@example.com") -> why it may not join this profile, so an
    # identifier seen again is neither asked for again nor counted again.
    refused_identifiers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, profile_id: str) -> Profile:
        return cls(profile_id=profile_id)

    def clone(self) -> Profile:
        """A shallow copy sharing every container (see the module's ownership convention)."""
        return Profile(*_FIELD_VALUES(self))

    def identifier_keys(self) -> list[str]:
        """Keys (``"email:ann@x.io"``) of every identifier held, strongest kind first."""
        return [
            *(identifier_key(IdentifierKind.USER_ID, v) for v in self.user_ids),
            *(identifier_key(IdentifierKind.EMAIL, v) for v in self.emails),
            *(identifier_key(IdentifierKind.ANONYMOUS_ID, v) for v in self.anonymous_ids),
        ]

    @property
    def rank(self) -> IdentifierKind:
        """The kind of identifier this profile's id derives from: its strongest held."""
        if self.user_ids:
            return IdentifierKind.USER_ID
        return IdentifierKind.EMAIL if self.emails else IdentifierKind.ANONYMOUS_ID

    @property
    def email(self) -> str | None:
        """The address to mail: the most recently seen one."""
        return self.emails[0] if self.emails else None

    @property
    def wake_at(self) -> int | None:
        """When the worker must look at this profile without an event: the earlier of its
        segment recheck and its next due journey step."""
        return _earliest(self.segment_recheck_at, self.journey_due_at)

    def consented(self, purpose: str) -> bool:
        given = self.consent.get(purpose)
        return given is not None and given.granted

    # -- storage / API form -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "profile_id": self.profile_id,
            "identities": {
                "anonymous_ids": list(self.anonymous_ids),
                "user_ids": list(self.user_ids),
                "emails": list(self.emails),
                "refused": dict(self.refused_identifiers),
            },
            "traits": {k: {"value": v.value, "at": v.at} for k, v in self.traits.items()},
            "consent": {k: {"granted": v.granted, "at": v.at} for k, v in self.consent.items()},
            "consent_history": [change.to_dict() for change in self.consent_history],
            "newsletter": {"status": self.newsletter, "at": self.newsletter_at},
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "views": {
                "count": self.page_views,
                "by_category": dict(self.views_by_category),
                "recent_products": [
                    {"product_id": p.product_id, "at": p.at} for p in self.recent_products
                ],
                "popup_shown_at": self.popup_shown_at,
            },
            "cart": {"items": dict(self.cart_items), "last_added_at": self.last_add_to_cart_at},
            "orders": {
                "placed": self.orders_placed,
                "cancelled": self.orders_cancelled,
                "refunded": self.orders_refunded,
                "revenue": self.revenue,
                "first_at": self.first_order_at,
                "last_at": self.last_order_at,
                "products": list(self.products_purchased),
                "categories": dict(self.categories_purchased),
            },
            "email": {
                **self.email_counts,
                "last_open_at": self.last_open_at,
                "last_click_at": self.last_click_at,
                "clicked_categories": dict(self.clicked_categories),
            },
            "events": {k: {"count": v.times, "last_at": v.last_at} for k, v in self.events.items()},
            "stays": [list(stay) for stay in self.stays],
            "segments": list(self.segments),
            "segment_sequence": self.segment_sequence,
            "segment_rules": self.segment_rules,
            "segment_recheck_at": self.segment_recheck_at,
            "journeys": {j: dict(steps) for j, steps in self.journeys.items()},
            "journey_flows": self.journey_flows,
            "journey_due_at": self.journey_due_at,
            "recent_event_ids": list(self.recent_event_ids),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        ids, views, cart = d["identities"], d["views"], d["cart"]
        orders, email, news = d["orders"], d["email"], d["newsletter"]
        schema = d.get("schema", 1)
        return cls(
            profile_id=d["profile_id"],
            anonymous_ids=tuple(ids["anonymous_ids"]),
            user_ids=tuple(ids["user_ids"]),
            emails=tuple(ids["emails"]),
            traits={k: Stamped(v["value"], v["at"]) for k, v in d["traits"].items()},
            consent={k: Consent(v["granted"], v["at"]) for k, v in d["consent"].items()},
            consent_history=tuple(
                ConsentChange(**change) for change in d.get("consent_history", ())
            ),
            newsletter=news["status"],
            newsletter_at=news["at"],
            first_seen=d["first_seen"],
            last_seen=d["last_seen"],
            page_views=views["count"],
            views_by_category=dict(views["by_category"]),
            recent_products=tuple(
                ProductSeen(p["product_id"], p["at"]) for p in views["recent_products"]
            ),
            cart_items=dict(cart["items"]),
            last_add_to_cart_at=cart["last_added_at"],
            popup_shown_at=views["popup_shown_at"],
            orders_placed=orders["placed"],
            orders_cancelled=orders["cancelled"],
            orders_refunded=orders["refunded"],
            revenue=float(orders["revenue"]),
            first_order_at=orders["first_at"],
            last_order_at=orders["last_at"],
            products_purchased=tuple(orders["products"]),
            categories_purchased=dict(orders["categories"]),
            email_counts={a: int(email.get(a, 0)) for a in EMAIL_ACTIONS},
            last_open_at=email["last_open_at"],
            last_click_at=email["last_click_at"],
            clicked_categories=dict(email["clicked_categories"]),
            events={
                k: EventCount(v["count"], v["last_at"]) for k, v in d.get("events", {}).items()
            },
            stays=_stored_stays(d),
            segments=tuple(d["segments"]),
            segment_sequence=d["segment_sequence"],
            # Without a recheck time the stored segments cannot be trusted to be current.
            segment_rules=d.get("segment_rules", "") if schema >= 3 else "",
            segment_recheck_at=d.get("segment_recheck_at"),
            journeys={j: dict(steps) for j, steps in d["journeys"].items()},
            journey_flows=d.get("journey_flows") or {},
            journey_due_at=d.get("journey_due_at"),
            recent_event_ids=_remembered(d["recent_event_ids"], schema),
            refused_identifiers=dict(ids.get("refused", {})),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> Profile:
        return cls.from_dict(orjson.loads(data))


def event_fingerprint(event_id: str) -> str:
    """What a profile remembers an applied event by: 64 bits of BLAKE2b, in 11 characters.

    Event ids are often UUIDs: 36 characters that do not compress, and with 512 of them a
    third or more of a stored profile. A false "already applied" needs two of one profile's
    512 remembered events to collide in 64 bits: about one in 10^14.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest)[:11].decode()


def _stored_stays(d: Mapping[str, Any]) -> tuple[Stay, ...]:
    """The stays of a stored profile; before profiles kept them, the journey book did."""
    stored = d["stays"] if "stays" in d else (d.get("journey_flows") or {}).get("stays", ())
    return tuple(Stay(str(o), int(a), int(b)) for o, a, b in stored)


def _remembered(stored: Iterable[str], schema: int) -> dict[str, None]:
    """The remembered ids of a stored profile; profiles stored before schema 2 held full
    event ids, so replays of their events are recognised after an upgrade too."""
    if schema >= 2:
        return dict.fromkeys(stored)
    return dict.fromkeys(
        key if key.startswith(MERGE_MARKER_PREFIX) else event_fingerprint(key) for key in stored
    )


@dataclass(frozen=True, slots=True)
class Forward:
    """What is left of a profile merged into another: where its events and lookups go."""

    into: str
    rank: IdentifierKind  # the rank of ``into``, for re-pointing identifiers to it

    def to_json(self) -> bytes:
        return orjson.dumps({FORWARD_FIELD: self.into, "rank": self.rank.value})


FORWARD_FIELD = "forward_to"


@dataclass(frozen=True, slots=True)
class Erased:
    """What is left of a profile erased on request: when. Until the erasure has unlinked
    the profile's identifiers (messages on their way to other partitions), events can still
    be routed here; those of before the erasure (read again after a crash, or late) are
    dropped instead of founding the profile again. Nothing else of the person is kept.
    """

    at: int

    def to_json(self) -> bytes:
        return orjson.dumps({ERASED_FIELD: self.at})


ERASED_FIELD = "erased_at"

StoredProfile = Profile | Forward | Erased
"""A profile table value."""


def load_stored(data: bytes) -> StoredProfile:
    """A profile table value: a profile, the forward a merged profile left behind, or the
    mark an erased one left."""
    raw = orjson.loads(data)
    if FORWARD_FIELD in raw:
        return Forward(raw[FORWARD_FIELD], IdentifierKind(raw["rank"]))
    if ERASED_FIELD in raw:
        return Erased(raw[ERASED_FIELD])
    return Profile.from_dict(raw)


def stored_recheck_at(data: bytes) -> int | None:
    """The :attr:`Profile.wake_at` of a profile table value, without building the profile
    (``None`` for a forward, or a profile stored before schema 3)."""
    raw = orjson.loads(data)
    return _earliest(raw.get("segment_recheck_at"), raw.get("journey_due_at"))


class StoredWake(NamedTuple):
    wake_at: int | None
    journey_due_at: int | None
    segment_rules: str | None  # None for a forward


def stored_wake(raw: Mapping[str, Any]) -> StoredWake:
    """The :attr:`Profile.wake_at`, ``journey_due_at`` and ``segment_rules`` of a profile
    table value (as a dict, see :func:`stored_dict`)."""
    due = raw.get("journey_due_at")
    return StoredWake(_earliest(raw.get("segment_recheck_at"), due), due, raw.get("segment_rules"))


def stored_dict(data: bytes) -> dict[str, Any]:
    """A profile table value as plain data, for reading a field or two of it."""
    raw: dict[str, Any] = orjson.loads(data)
    return raw


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def dump_stored(stored: StoredProfile) -> bytes:
    """The profile table value of ``stored`` (read back by :func:`load_stored`)."""
    return stored.to_json()


_FIELD_VALUES = operator.attrgetter(*(f.name for f in fields(Profile)))
