"""The CEL view of a profile: the ``profile`` variable segment expressions read.

Which paths exist (:data:`CEL_PATHS`), the profile attributes each is computed from
(:func:`cel_sources`), and the values themselves, converted to what CEL expects.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from streams.profiles.model import EMAIL_ACTIONS, Profile, next_stay_start, stay_ends

_EPOCH = datetime.fromtimestamp(0, UTC)


def ms_to_datetime(ms: int | None) -> datetime:
    """CEL timestamps: ``None`` ("never") maps to the Unix epoch, so ``now - t`` is huge."""
    return _EPOCH if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


_Getter = Callable[[Profile], Any]
_ClockGetter = Callable[[Profile, int], Any]


def _read(attribute: str, convert: Callable[[Any], Any] | None = None) -> _Getter:
    """The CEL value of one profile attribute: the attribute's value, converted."""
    get = operator.attrgetter(attribute)
    if convert is None:
        return get
    return lambda p: convert(get(p))


def _values(d: Mapping[str, Any], field_name: str) -> dict[str, Any]:
    return {k: getattr(v, field_name) for k, v in d.items()}


def _event_counts(events: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``profile.events["Brochure Requested"].count`` and ``.last_at`` (a timestamp)."""
    return {
        name: {"count": seen.times, "last_at": ms_to_datetime(seen.last_at)}
        for name, seen in events.items()
    }


# Path -> (the Profile attribute its value is computed from, how). One attribute per path,
# so whether a path can have changed is a comparison of that attribute alone.
_CEL_FIELD_SOURCES: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "id": ("profile_id", None),
    "has_email": ("emails", bool),
    "traits": ("traits", lambda traits: _values(traits, "value")),
    "consent": ("consent", lambda consent: _values(consent, "granted")),
    "newsletter": ("newsletter", None),
    "first_seen": ("first_seen", ms_to_datetime),
    "last_seen": ("last_seen", ms_to_datetime),
    "page_views": ("page_views", None),
    "views_by_category": ("views_by_category", None),
    "recently_viewed": ("recent_products", lambda seen: [s.product_id for s in seen]),
    "popup_shown_at": ("popup_shown_at", ms_to_datetime),
    "first_order_at": ("first_order_at", ms_to_datetime),
    "last_order_at": ("last_order_at", ms_to_datetime),
    "products_purchased": ("products_purchased", list),
    "categories_purchased": ("categories_purchased", None),
    "events": ("events", lambda events: _event_counts(events)),
    "segments": ("segments", list),
}

_CEL_GROUP_SOURCES: dict[str, dict[str, tuple[str, Callable[[Any], Any] | None]]] = {
    "identities": {
        "anonymous_ids": ("anonymous_ids", list),
        "user_ids": ("user_ids", list),
        "emails": ("emails", list),
    },
    "orders": {
        "count": ("orders_placed", None),
        "cancelled": ("orders_cancelled", None),
        "refunded": ("orders_refunded", None),
        "revenue": ("revenue", None),
    },
    "cart": {
        "items": ("cart_items", list),
        # Cheap to convert, unlike `items`: prefer it when only emptiness matters.
        "size": ("cart_items", len),
        "last_added_at": ("last_add_to_cart_at", ms_to_datetime),
    },
    "email": {
        "last_open_at": ("last_open_at", ms_to_datetime),
        "last_click_at": ("last_click_at", ms_to_datetime),
        "clicked_categories": ("clicked_categories", None),
        **{action: ("email_counts", operator.itemgetter(action)) for action in EMAIL_ACTIONS},
    },
}


def _clock_group(members: Mapping[str, tuple[str, _ClockGetter]]) -> _ClockGetter:
    return lambda p, now: {name: get(p, now) for name, (_, get) in members.items()}


# Paths whose value depends on the clock as well as on one attribute: group -> member ->
# (the attribute, its value at a wall-clock ms). The clock changes them only at the
# attribute's own instants (streams.segments.clock.CLOCK_EDGES).
_CEL_CLOCK_SOURCES: dict[str, dict[str, tuple[str, _ClockGetter]]] = {
    "stays": {
        "current": ("stays", lambda p, now: stay_ends(p.stays, now) is not None),
        # null when no stay is ahead (not the epoch: "never" here lies in the future).
        "next_starts_at": (
            "stays",
            lambda p, now: (
                None if (start := next_stay_start(p.stays, now)) is None else ms_to_datetime(start)
            ),
        ),
    },
}
_CEL_CLOCK_GETTERS: dict[str, _ClockGetter] = {
    **{
        f"{group}.{member}": get
        for group, members in _CEL_CLOCK_SOURCES.items()
        for member, (_, get) in members.items()
    },
    **{group: _clock_group(members) for group, members in _CEL_CLOCK_SOURCES.items()},
}

_CEL_FIELDS: dict[str, _Getter] = {
    path: _read(*source) for path, source in _CEL_FIELD_SOURCES.items()
}
_CEL_GROUPS: dict[str, dict[str, _Getter]] = {
    group: {member: _read(*source) for member, source in members.items()}
    for group, members in _CEL_GROUP_SOURCES.items()
}


def _group(getters: Mapping[str, _Getter]) -> _Getter:
    return lambda p: {name: get(p) for name, get in getters.items()}


# Path -> its CEL value, for every path in CEL_PATHS.
_CEL_GETTERS: dict[str, _Getter] = {
    **_CEL_FIELDS,
    **{group: _group(members) for group, members in _CEL_GROUPS.items()},
    **{
        f"{group}.{member}": get
        for group, members in _CEL_GROUPS.items()
        for member, get in members.items()
    },
}
# Every path whose value is one attribute's: the top-level fields and the groups' members.
_CEL_VALUE_SOURCES: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    **_CEL_FIELD_SOURCES,
    **{
        f"{group}.{member}": source
        for group, members in _CEL_GROUP_SOURCES.items()
        for member, source in members.items()
    },
}
_CEL_SOURCES: dict[str, frozenset[str]] = {
    **{path: frozenset([attribute]) for path, (attribute, _) in _CEL_VALUE_SOURCES.items()},
    **{
        group: frozenset(attribute for attribute, _ in members.values())
        for group, members in _CEL_GROUP_SOURCES.items()
    },
    **{
        path: frozenset(attribute for attribute, _ in members.values())
        for group, members in _CEL_CLOCK_SOURCES.items()
        for path in (group, *(f"{group}.{member}" for member in members))
    },
}


def cel_sources(paths: Iterable[str]) -> frozenset[str]:
    """The Profile attributes the CEL values at ``paths`` are computed from.

    Two profiles with equal values of these attributes have equal views at ``paths``, so an
    expression over those paths (and not the clock) gives the same result for both.
    """
    return frozenset(attribute for path in paths for attribute in _CEL_SOURCES[path])


#: The paths whose value is a map of its own (not a group): what an expression may read by
#: literal keys alone (``"toys" in profile.views_by_category``).
CEL_MAPS: frozenset[str] = frozenset(
    {
        "traits",
        "consent",
        "views_by_category",
        "categories_purchased",
        "email.clicked_categories",
        "events",
    }
)
#: The paths whose value is a timestamp -> the Profile attribute (epoch ms or None) it is.
CEL_TIMESTAMPS: dict[str, str] = {
    path: attribute
    for path, (attribute, convert) in _CEL_VALUE_SOURCES.items()
    if convert is ms_to_datetime
}

#: Every path a segment expression may reference below ``profile``: top-level names,
#: group names, and ``group.member`` names.
CEL_PATHS: frozenset[str] = frozenset(_CEL_SOURCES)
#: The top-level paths only: what a full view is built from.
CEL_TOP_LEVEL: tuple[str, ...] = (*_CEL_FIELDS, *_CEL_GROUPS, *_CEL_CLOCK_SOURCES)
#: The paths whose value the clock changes at the instants of their attribute
#: (``stays.current``): path -> that Profile attribute.
CEL_CLOCK_PATHS: dict[str, str] = {
    path: next(iter(attributes))
    for path, attributes in _CEL_SOURCES.items()
    if path.partition(".")[0] in _CEL_CLOCK_SOURCES
}


def cel_variable(path: str) -> str:
    """What ``profile.<path>`` becomes in a flattened expression
    (``orders.count``: ``profile__orders__count``)."""
    return "profile__" + path.replace(".", "__")


_CEL_VARIABLES: dict[str, str] = {path: cel_variable(path) for path in CEL_PATHS}


def _value(profile: Profile, path: str, now_ms: int) -> Any:
    clocked = _CEL_CLOCK_GETTERS.get(path)
    return _CEL_GETTERS[path](profile) if clocked is None else clocked(profile, now_ms)


def cel_view(
    profile: Profile, paths: Iterable[str] | None = None, now_ms: int = 0
) -> dict[str, Any]:
    """The ``profile`` variable of segment expressions, restricted to ``paths``.

    Converting Python values into CEL values costs ~1-2 µs per element, far more than
    evaluating an expression, so the evaluator asks only for the paths its expressions
    reference (``"orders"`` for a whole group, ``"orders.count"`` for one member).
    ``None`` builds the full view. Valid paths: :data:`CEL_PATHS`; those in
    :data:`CEL_CLOCK_PATHS` are their values at ``now_ms``.
    """
    view: dict[str, Any] = {}
    for path in CEL_TOP_LEVEL if paths is None else paths:
        head, _, tail = path.partition(".")
        if tail:
            view.setdefault(head, {})[tail] = _value(profile, path, now_ms)
        else:
            view[head] = _value(profile, head, now_ms)
    return view


def flat_variables(
    profile: Profile,
    paths: Iterable[str],
    keys: Mapping[str, frozenset[str]] | None = None,
    now_ms: int = 0,
) -> dict[str, Any]:
    """The values at ``paths``, each as a variable of its own (:func:`cel_variable`);
    the maps at the paths in ``keys`` hold only those keys.

    What an expression rewritten to read its paths so is evaluated over: the CEL
    binding converts a map at about a microsecond per key, and the nested view is maps
    within a map.
    """
    variables = {_CEL_VARIABLES[path]: _value(profile, path, now_ms) for path in paths}
    for path, wanted in (keys or {}).items():
        variable = _CEL_VARIABLES[path]
        whole = variables[variable]
        variables[variable] = {key: whole[key] for key in wanted if key in whole}
    return variables
