"""Journey definitions from YAML (format documented in ``default_journeys.yaml``).

Only what is enforced is accepted: ``delay``, ``exit_events``, ``suppress_segments`` and
``frequency_cap`` are reserved and rejected with "not supported yet" until the rules
implement them, so a file never silently promises behaviour the worker lacks. They will
become fields of :class:`JourneyDefinition`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

from streams.events import Event, EventKind
from streams.profiles.model import EMAIL_ACTIONS, Profile
from streams.rule_files import DefinitionError, Reader, field_reader, read_entries

INTEREST_PREFIX = "interest_"
_RESERVED = frozenset({"delay", "exit_events", "suppress_segments", "frequency_cap"})
_FIELDS = {"trigger", "step", "consent", "payload", "repeat", "description"}

# The body field that qualifies each kind in an event trigger ("order.placed"), and the
# values it can take.
_QUALIFIER: dict[EventKind, tuple[str, frozenset[str]]] = {
    EventKind.PAGE_VIEW: ("action", frozenset({"view", "add_to_cart", "popup_shown"})),
    EventKind.ORDER: ("status", frozenset({"placed", "cancelled", "refunded"})),
    EventKind.EMAIL: ("action", frozenset(EMAIL_ACTIONS)),
    EventKind.IDENTIFY: ("newsletter", frozenset({"subscribed", "unsubscribed"})),
    EventKind.TRACK: ("name", frozenset()),  # any custom event: "track" without a qualifier
}


class TriggerKind(StrEnum):
    SEGMENT_ENTERED = "segment_entered"
    SEGMENT_EXITED = "segment_exited"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class TriggerRule:
    kind: TriggerKind
    # A segment name or glob ("interest_*"), or an event "kind" / "kind.qualifier".
    pattern: str

    def matches_segment(self, segment: str) -> bool:
        return fnmatchcase(segment, self.pattern)

    def matches_event(self, event: Event) -> bool:
        kind, _, qualifier = self.pattern.partition(".")
        if event.kind.value != kind:
            return False
        return not qualifier or event.body.get(_QUALIFIER[event.kind][0]) == qualifier


@dataclass(frozen=True, slots=True)
class JourneyDefinition:
    name: str
    trigger: TriggerRule
    step: str
    consent: str  # the purpose that must be granted
    payload: tuple[str, ...]
    # False: at most one trigger per (journey, step) per profile, ever.
    repeat: bool = False
    description: str = ""


class PayloadSource(NamedTuple):
    """What payload fields are computed from; ``after`` already has its new segments."""

    before: Profile
    after: Profile
    event: Event | None  # None when a merge, not an event, changed the profile
    segment: str | None  # the segment whose change fired the journey, if any


def _trait(name: str) -> Callable[[PayloadSource], Any]:
    def get(src: PayloadSource) -> Any:
        stamped = src.after.traits.get(name)
        return None if stamped is None else stamped.value

    return get


def _order_field(name: str) -> Callable[[PayloadSource], Any]:
    return lambda src: src.event.body.get(name) if _is_order(src.event) else None


def _is_order(event: Event | None) -> TypeGuard[Event]:
    return event is not None and event.kind is EventKind.ORDER


def _order_products(src: PayloadSource) -> list[str]:
    if not _is_order(src.event):
        return []
    items = src.event.body.get("items") or ()
    return list(dict.fromkeys(i["product_id"] for i in items if i.get("product_id")))


def _interest(src: PayloadSource) -> str | None:
    if src.segment is None or not src.segment.startswith(INTEREST_PREFIX):
        return None
    return src.segment.removeprefix(INTEREST_PREFIX)


#: Payload field name -> how it is computed. The email tool receives these names.
PAYLOAD_FIELDS: dict[str, Callable[[PayloadSource], Any]] = {
    "first_name": _trait("first_name"),
    "language": _trait("language"),
    "interests": lambda src: [
        s.removeprefix(INTEREST_PREFIX) for s in src.after.segments if s.startswith(INTEREST_PREFIX)
    ],
    "interest": _interest,
    "segment": lambda src: src.segment,
    "recently_viewed": lambda src: [s.product_id for s in src.after.recent_products],
    "cart_items": lambda src: list(src.after.cart_items),
    "order_id": _order_field("order_id"),
    "order_total": _order_field("total"),
    "currency": _order_field("currency"),
    "order_products": _order_products,
    # Everything bought so far, including this order: what the mail must not advertise.
    "products_purchased": lambda src: list(src.after.products_purchased),
}


def load_journeys(path: Path | None, segment_names: Collection[str]) -> list[JourneyDefinition]:
    """Load and check journeys (``None``: shipped defaults) against the known segments."""
    source, entries = read_entries(path, "default_journeys.yaml", "journeys")
    journeys = []
    for name, entry in entries:
        reserved = sorted(_RESERVED & set(entry))
        if reserved:
            raise DefinitionError(source, name, f"not supported yet: {', '.join(reserved)}")
        read = field_reader(source, name, entry, _FIELDS)
        payload: list[str] = read.get(
            "payload", list, [], check=lambda names: all(isinstance(n, str) for n in names)
        )
        unknown = [p for p in payload if p not in PAYLOAD_FIELDS]
        if unknown:
            known = ", ".join(PAYLOAD_FIELDS)
            raise read.fail(f"unknown payload field(s) {unknown}; known: {known}")
        journeys.append(
            JourneyDefinition(
                name=name,
                trigger=_trigger(read, segment_names),
                step=read.get("step", str, check=str.isidentifier),
                consent=read.get("consent", str, check=bool),
                payload=tuple(payload),
                repeat=read.get("repeat", bool, False),
                description=read.get("description", str, ""),
            )
        )
    return journeys


def _trigger(read: Reader, segment_names: Collection[str]) -> TriggerRule:
    spec: dict[str, Any] = read.get("trigger", dict, check=lambda d: len(d) == 1)
    ((key, pattern),) = spec.items()
    try:
        kind = TriggerKind(key)
    except ValueError:
        raise read.fail(f"trigger must be one of {[k.value for k in TriggerKind]}") from None
    if not isinstance(pattern, str) or not pattern:
        raise read.fail(f"trigger {key} needs a non-empty string, got {pattern!r}")
    rule = TriggerRule(kind, pattern)
    if kind is TriggerKind.EVENT:
        event_kind, _, qualifier = pattern.partition(".")
        if event_kind not in {k.value for k in EventKind}:
            raise read.fail(f"unknown event kind {event_kind!r} in trigger")
        allowed = _QUALIFIER[EventKind(event_kind)][1]
        if qualifier and qualifier not in allowed:
            raise read.fail(
                f"unknown {event_kind} qualifier {qualifier!r}; one of {sorted(allowed)}"
            )
    elif not any(rule.matches_segment(s) for s in segment_names):
        raise read.fail(f"trigger refers to unknown segment {pattern!r}")
    return rule
