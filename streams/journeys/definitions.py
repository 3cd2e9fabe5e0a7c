"""Journey definitions from YAML: policies and flows (format in ``default_journeys.yaml``).

A journey is an entry rule and a list of steps (``wait``, ``send``, ``if``/``then``/``else``,
``wait_until``), with exit rules, a consent purpose, re-entry and holdout; the file's
``policies`` cap sends across journeys, hold them in quiet hours and rank journeys for a
capped slot. An invalid file fails at load, naming the journey, the step and the problem.

The one-step form of earlier files (``trigger``, ``step``, ``payload``, ``repeat``) is still
read: it is a one-``send`` flow.

Conditions (``if``) are CEL over the profile, compiled by the caller's ``compile_condition``
(the segments domain owns CEL over the profile; a domain does not import another).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml

from streams.events import Event, EventKind
from streams.profiles.model import EMAIL_ACTIONS, Profile
from streams.rule_files import DefinitionError, Reader, field_reader, read_entries

INTEREST_PREFIX = "interest_"
_LEGACY_FIELDS = {"trigger", "step", "payload", "repeat"}
_FIELDS = {
    "entry",
    "consent",
    "transactional",
    "re_entry",
    "exit_on",
    "holdout",
    "steps",
    "description",
    "backfill",
}
_STEP_KINDS = ("wait", "send", "if", "wait_until")
CHANNELS = frozenset({"email"})

# The body field that qualifies each kind in an event trigger ("order.placed"), and the
# values it can take.
_QUALIFIER: dict[EventKind, tuple[str, frozenset[str]]] = {
    EventKind.PAGE_VIEW: ("action", frozenset({"view", "add_to_cart", "popup_shown"})),
    EventKind.ORDER: ("status", frozenset({"placed", "cancelled", "refunded"})),
    EventKind.EMAIL: ("action", frozenset(EMAIL_ACTIONS)),
    EventKind.IDENTIFY: ("newsletter", frozenset({"subscribed", "unsubscribed"})),
    EventKind.TRACK: ("name", frozenset()),  # any custom event: "track" without a qualifier
}

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def duration_ms(text: object) -> int | None:
    """``"90d"``, ``"12h"``, ``"15m"``, ``"30s"`` in milliseconds; a leading ``-`` negates;
    ``None`` for anything else."""
    if not isinstance(text, str):
        return None
    sign = -1 if text.startswith("-") else 1
    match = _DURATION.match(text.removeprefix("-"))
    if match is None:
        return None
    return sign * int(match.group(1)) * _UNIT_MS[match.group(2)]


def clock_minutes(text: object) -> int | None:
    """``"21:00"`` as minutes after midnight; ``None`` for anything else."""
    if not isinstance(text, str):
        return None
    match = _CLOCK.match(text)
    return None if match is None else int(match.group(1)) * 60 + int(match.group(2))


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
class ExitRule:
    rule: TriggerRule
    goal: bool = False  # the journey reached what it was for: reason "goal", not "exit_rule"


# -- steps ----------------------------------------------------------------------------------

Condition = Callable[[Profile, int], bool]
"""A compiled ``if``: the profile and the instant (epoch ms) in, membership out."""
CompileCondition = Callable[[str], Condition]


@dataclass(frozen=True, slots=True)
class Wait:
    key: str
    ms: int


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """The next instant of a clock time, a yearly date from a trait, or an order's date."""

    key: str
    time: int | None = None  # minutes after midnight in the profile's time zone
    trait: str | None = None  # a date trait ("1990-05-17" or "05-17"), yearly
    order_field: str | None = None  # stay_starts_at | stay_ends_at of the entry order
    offset_ms: int = 0


@dataclass(frozen=True, slots=True)
class Send:
    key: str  # the template name: unique within its journey, the step's identity
    template: str
    payload: tuple[str, ...] = ()
    channel: str = "email"
    # How long a send deferred by a cap or quiet hours stays worth sending; None: always.
    expires_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    key: str
    condition: str
    test: Condition = field(compare=False, repr=False)
    then: tuple[Step, ...] = ()
    otherwise: tuple[Step, ...] = ()


Step = Wait | WaitUntil | Send | Branch


@dataclass(frozen=True, slots=True)
class Jump:
    """Compiled only: the end of a ``then`` block skipping its ``else``."""

    key: str
    to: int


Instruction = Wait | WaitUntil | Send | Branch | Jump


def _compile(steps: Sequence[Step], into: list[Instruction], else_at: dict[str, int]) -> None:
    for step in steps:
        into.append(step)
        if isinstance(step, Branch):
            _compile(step.then, into, else_at)
            jump_at = len(into)
            into.append(Jump(f"{step.key}.end", -1))
            else_at[step.key] = len(into)
            _compile(step.otherwise, into, else_at)
            into[jump_at] = Jump(f"{step.key}.end", len(into))


@dataclass(frozen=True, slots=True)
class JourneyDefinition:
    name: str
    entry: TriggerRule
    consent: str  # the purpose that must be granted (not checked for transactional journeys)
    steps: tuple[Step, ...]
    transactional: bool = False
    # None: never again once entered; else the least time from one entry to the next.
    re_entry_ms: int | None = None
    exit_on: tuple[ExitRule, ...] = ()
    holdout_percent: float = 0.0
    backfill: bool = False
    description: str = ""
    program: tuple[Instruction, ...] = field(init=False, compare=False, repr=False)
    positions: Mapping[str, int] = field(init=False, compare=False, repr=False)
    else_at: Mapping[str, int] = field(init=False, compare=False, repr=False)
    # Where the journey goes on after its last step: its first top-level yearly wait
    # (`wait_until: {trait, each: year}`), one round a year; None: it completes.
    yearly_at: int | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        program: list[Instruction] = []
        else_at: dict[str, int] = {}
        _compile(self.steps, program, else_at)
        positions = {ins.key: i for i, ins in enumerate(program)}
        yearly = next(
            (s for s in self.steps if isinstance(s, WaitUntil) and s.trait is not None), None
        )
        object.__setattr__(self, "program", tuple(program))
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "else_at", else_at)
        object.__setattr__(self, "yearly_at", None if yearly is None else positions[yearly.key])

    # What the one-step form called them; a flow's first send.
    @property
    def trigger(self) -> TriggerRule:
        return self.entry

    @property
    def step(self) -> str:
        return next((i.template for i in self.program if isinstance(i, Send)), "")

    @property
    def payload(self) -> tuple[str, ...]:
        return next((i.payload for i in self.program if isinstance(i, Send)), ())

    @property
    def repeat(self) -> bool:
        return self.re_entry_ms is not None


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    channel: str
    max: int
    per_ms: int


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: int  # minutes after midnight, local
    end: int
    timezone_trait: str = "timezone"
    default_timezone: str = "UTC"

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # over midnight


@dataclass(frozen=True, slots=True)
class Policies:
    frequency_caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    # Journeys first to last in who wins a capped slot; unlisted ones after, in file order.
    priority: tuple[str, ...] = ()
    # Promotional journeys whose sends are held while a stay is current.
    suppress_during_stay: tuple[str, ...] = ()
    default_timezone: str = "UTC"


NO_POLICIES = Policies()


@dataclass(frozen=True, slots=True)
class Flows:
    """A journeys file: its journeys in priority order, and its policies."""

    journeys: tuple[JourneyDefinition, ...]
    policies: Policies = NO_POLICIES
    by_name: Mapping[str, JourneyDefinition] = field(init=False, compare=False, repr=False)
    fingerprint: str = field(init=False, compare=False, repr=False)
    """What a profile's journey states record they were made under."""
    event_rules: Mapping[str, tuple[TriggerRule, ...]] = field(
        init=False, compare=False, repr=False
    )
    """Every entry and exit rule on events, by event kind ("order")."""
    segment_rules: tuple[TriggerRule, ...] = field(init=False, compare=False, repr=False)
    """Every entry and exit rule on segment changes."""
    backfilled: tuple[JourneyDefinition, ...] = field(init=False, compare=False, repr=False)
    """The journeys current members of their entry segment enter (``backfill: true``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {j.name: j for j in self.journeys})
        object.__setattr__(self, "fingerprint", flows_fingerprint(self))
        exits = [e.rule for j in self.journeys for e in j.exit_on]
        unique = list(dict.fromkeys([j.entry for j in self.journeys] + exits))
        by_kind: dict[str, tuple[TriggerRule, ...]] = {}
        for rule in unique:
            if rule.kind is TriggerKind.EVENT:
                kind = rule.pattern.partition(".")[0]
                by_kind[kind] = (*by_kind.get(kind, ()), rule)
        segment = tuple(r for r in unique if r.kind is not TriggerKind.EVENT)
        object.__setattr__(self, "event_rules", by_kind)
        object.__setattr__(self, "segment_rules", segment)
        object.__setattr__(self, "backfilled", tuple(j for j in self.journeys if j.backfill))

    @property
    def window_ms(self) -> int:
        """The longest cap window: how long sends must be remembered."""
        return max((c.per_ms for c in self.policies.frequency_caps), default=0)


class PayloadSource(NamedTuple):
    """What payload fields are computed from; ``after`` already has its new segments."""

    before: Profile
    after: Profile
    event: Event | None  # None when a merge or a timer, not an event, moved the journey
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


# What the welcome series asks for: the traits a profile still lacks.
ASKED_TRAITS = ("first_name", "language", "interests", "birthday")


def _missing_traits(src: PayloadSource) -> list[str]:
    have = src.after.traits
    interests = any(s.startswith(INTEREST_PREFIX) for s in src.after.segments)
    return [
        t
        for t in ASKED_TRAITS
        if not (interests if t == "interests" else t in have and have[t].value)
    ]


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
    "missing_traits": _missing_traits,
}

ORDER_DATES = frozenset({"stay_starts_at", "stay_ends_at"})


# -- loading --------------------------------------------------------------------------------


def load_flows(
    path: Path | None,
    segment_names: Collection[str],
    compile_condition: CompileCondition | None = None,
) -> Flows:
    """Load and check a journeys file (``None``: shipped defaults) against the known segments.

    ``compile_condition`` compiles ``if`` expressions; without it a file with one is refused.
    """
    source, entries = read_entries(path, "default_journeys.yaml", "journeys")
    journeys = [
        _journey(source, name, entry, segment_names, compile_condition) for name, entry in entries
    ]
    names = [j.name for j in journeys]
    policies = _policies(source, _document(path), names)
    rank = {name: i for i, name in enumerate(policies.priority)}
    # Priority order, file order among the unranked (sorted is stable).
    ordered = sorted(journeys, key=lambda j: rank.get(j.name, len(rank)))
    return Flows(tuple(ordered), policies)


def load_journeys(
    path: Path | None,
    segment_names: Collection[str],
    compile_condition: CompileCondition | None = None,
) -> list[JourneyDefinition]:
    """The journeys of a file, in priority order (see :func:`load_flows`)."""
    return list(load_flows(path, segment_names, compile_condition).journeys)


def flows_fingerprint(flows: Flows) -> str:
    """What changes when a journey's steps do (states made under others are checked)."""
    text = orjson.dumps([repr((j.name, j.steps)) for j in flows.journeys])
    return hashlib.sha256(text).hexdigest()[:16]


def _document(path: Path | None) -> dict[str, Any]:
    # read_entries has checked the file already; read again for the top-level policies.
    if path is None:
        text = resources.files("streams.journeys").joinpath("default_journeys.yaml").read_text()
    else:
        text = path.read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _journey(
    source: str,
    name: str,
    entry: dict[str, Any],
    segment_names: Collection[str],
    compile_condition: CompileCondition | None,
) -> JourneyDefinition:
    legacy = _LEGACY_FIELDS & set(entry)
    if legacy:
        return _legacy(source, name, entry, segment_names)
    read = field_reader(source, name, entry, _FIELDS)
    steps_raw: list[Any] = read.get("steps", list, check=bool)
    steps = _steps(read, steps_raw, "", compile_condition)
    sends = [s.template for s in _all_steps(steps) if isinstance(s, Send)]
    if not sends:
        raise read.fail("steps: no send step")
    repeated = sorted({t for t in sends if sends.count(t) > 1})
    if repeated:
        raise read.fail(f"steps: send {repeated[0]!r} appears twice (a send names its step)")
    holdout_raw = read.get("holdout", object, "0%")
    holdout = _percent(holdout_raw)
    if holdout is None:
        raise read.fail(f"field 'holdout' must be a percentage like '10%', got {holdout_raw!r}")
    entry_rule = _rule(read, read.get("entry", dict), "entry", segment_names)
    return JourneyDefinition(
        name=name,
        entry=entry_rule,
        consent=read.get("consent", str, check=bool),
        steps=steps,
        transactional=read.get("transactional", bool, False),
        re_entry_ms=_re_entry(read),
        exit_on=_exit_rules(read, segment_names),
        holdout_percent=holdout,
        backfill=_backfill(read, entry_rule),
        description=read.get("description", str, ""),
    )


def _backfill(read: Reader, entry: TriggerRule) -> bool:
    """Whether current members of the entry segment enter too, not only future entries."""
    backfill: bool = read.get("backfill", bool, False)
    if backfill and entry.kind is not TriggerKind.SEGMENT_ENTERED:
        raise read.fail("backfill: true needs a segment_entered entry (current members enter)")
    return backfill


def _legacy(
    source: str, name: str, entry: dict[str, Any], segment_names: Collection[str]
) -> JourneyDefinition:
    read = field_reader(source, name, entry, _LEGACY_FIELDS | {"consent", "description"})
    step = read.get("step", str, check=str.isidentifier)
    payload = _payload(read, read.get("payload", list, []), f"send {step}")
    return JourneyDefinition(
        name=name,
        entry=_rule(read, read.get("trigger", dict), "trigger", segment_names),
        consent=read.get("consent", str, check=bool),
        steps=(Send(step, step, payload),),
        re_entry_ms=0 if read.get("repeat", bool, False) else None,
        description=read.get("description", str, ""),
    )


def _all_steps(steps: Sequence[Step]) -> list[Step]:
    found: list[Step] = []
    for step in steps:
        found.append(step)
        if isinstance(step, Branch):
            found += _all_steps(step.then) + _all_steps(step.otherwise)
    return found


def _percent(value: object) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0.0
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) > 100:
        return None
    return float(match.group(1))


def _re_entry(read: Reader) -> int | None:
    raw = read.get("re_entry", object, "never")
    if raw == "never":
        return None
    if isinstance(raw, dict) and set(raw) == {"after"}:
        after = duration_ms(raw["after"])
        if after is not None and after >= 0:
            return after
    raise read.fail(f"field 're_entry' must be never or {{after: <duration>}}, got {raw!r}")


def _exit_rules(read: Reader, segment_names: Collection[str]) -> tuple[ExitRule, ...]:
    raw: list[Any] = read.get("exit_on", list, [])
    rules = []
    for index, item in enumerate(raw, 1):
        where = f"exit_on #{index}"
        if not isinstance(item, dict):
            raise read.fail(f"{where}: expected a mapping, got {item!r}")
        spec = dict(item)
        goal = spec.pop("goal", False)
        if not isinstance(goal, bool):
            raise read.fail(f"{where}: 'goal' must be true or false")
        rules.append(ExitRule(_rule(read, spec, where, segment_names), goal))
    return tuple(rules)


def _rule(
    read: Reader, spec: dict[str, Any], where: str, segment_names: Collection[str]
) -> TriggerRule:
    if len(spec) != 1:
        raise read.fail(f"{where} needs exactly one of {[k.value for k in TriggerKind]}")
    ((key, pattern),) = spec.items()
    try:
        kind = TriggerKind(key)
    except ValueError:
        raise read.fail(f"{where} must be one of {[k.value for k in TriggerKind]}") from None
    if not isinstance(pattern, str) or not pattern:
        raise read.fail(f"{where} {key} needs a non-empty string, got {pattern!r}")
    rule = TriggerRule(kind, pattern)
    if kind is TriggerKind.EVENT:
        event_kind, _, qualifier = pattern.partition(".")
        if event_kind not in {k.value for k in EventKind}:
            raise read.fail(f"unknown event kind {event_kind!r} in {where}")
        allowed = _QUALIFIER[EventKind(event_kind)][1]
        if qualifier and qualifier not in allowed:
            raise read.fail(
                f"unknown {event_kind} qualifier {qualifier!r} in {where}; one of {sorted(allowed)}"
            )
    elif not any(rule.matches_segment(s) for s in segment_names):
        raise read.fail(f"{where} refers to unknown segment {pattern!r}")
    return rule


def _payload(read: Reader, payload: object, where: str) -> tuple[str, ...]:
    if not isinstance(payload, list) or not all(isinstance(n, str) for n in payload):
        raise read.fail(f"{where}: field 'payload' has an invalid value {payload!r}")
    unknown = [p for p in payload if p not in PAYLOAD_FIELDS]
    if unknown:
        known = ", ".join(PAYLOAD_FIELDS)
        raise read.fail(f"{where}: unknown payload field(s) {unknown}; known: {known}")
    return tuple(payload)


def _steps(
    read: Reader, raw: list[Any], prefix: str, compile_condition: CompileCondition | None
) -> tuple[Step, ...]:
    steps: list[Step] = []
    for index, item in enumerate(raw, 1):
        key = f"{prefix}{index}"
        steps.append(_step(read, item, key, compile_condition))
    return tuple(steps)


def _step(read: Reader, item: object, key: str, compile_condition: CompileCondition | None) -> Step:
    where = f"step {key}"
    if not isinstance(item, dict):
        raise read.fail(f"{where}: expected a mapping, got {item!r}")
    kinds = [k for k in _STEP_KINDS if k in item]
    if len(kinds) != 1:
        raise read.fail(f"{where}: needs exactly one of {', '.join(_STEP_KINDS)}")
    (kind,) = kinds
    allowed = {
        "wait": {"wait"},
        "send": {"send", "payload", "channel", "expires"},
        "if": {"if", "then", "else"},
        "wait_until": {"wait_until"},
    }[kind]
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise read.fail(f"{where} ({kind}): unknown field(s): {', '.join(unknown)}")
    if kind == "wait":
        ms = duration_ms(item["wait"])
        if ms is None or ms <= 0:
            raise read.fail(
                f"{where}: wait needs a duration like 1h, 30s, 7d; got {item['wait']!r}"
            )
        return Wait(key, ms)
    if kind == "send":
        template = item["send"]
        if not isinstance(template, str) or not template.isidentifier():
            raise read.fail(f"{where}: send needs a template name, got {template!r}")
        where = f"step {key} (send {template})"
        channel = item.get("channel", "email")
        if channel not in CHANNELS:
            raise read.fail(f"{where}: unknown channel {channel!r}; one of {sorted(CHANNELS)}")
        expires = item.get("expires")
        expires_ms = None if expires is None else duration_ms(expires)
        if expires is not None and (expires_ms is None or expires_ms <= 0):
            raise read.fail(f"{where}: expires needs a duration, got {expires!r}")
        payload = _payload(read, item.get("payload", []), where)
        return Send(template, template, payload, channel, expires_ms)
    if kind == "if":
        condition = item["if"]
        if not isinstance(condition, str) or not condition.strip():
            raise read.fail(f"{where}: if needs a CEL expression, got {condition!r}")
        if compile_condition is None:
            raise read.fail(f"{where}: conditions cannot be compiled here")
        try:
            test = compile_condition(condition)
        except ValueError as exc:
            raise read.fail(f"{where}: {exc}") from exc
        branches = []
        for part in ("then", "else"):
            body = item.get(part, [])
            if not isinstance(body, list) or (part == "then" and not body):
                raise read.fail(f"{where}: '{part}' must be a non-empty list of steps")
            branches.append(_steps(read, body, f"{key}.{part}.", compile_condition))
        return Branch(key, condition, test, branches[0], branches[1])
    return _wait_until(read, item["wait_until"], key, where)


def _wait_until(read: Reader, spec: object, key: str, where: str) -> WaitUntil:
    if not isinstance(spec, dict):
        raise read.fail(f"{where}: wait_until needs a mapping, got {spec!r}")
    bases = [b for b in ("trait", "order_field") if b in spec] or ["time"] * ("time" in spec)
    if len(bases) != 1 or (bases == ["time"] and set(spec) - {"time"}):
        raise read.fail(
            f"{where}: wait_until needs one of time, trait (with each: year), "
            "order_field (with offset)"
        )
    (base,) = bases
    unknown = sorted(set(spec) - {base, "each", "time", "offset"})
    if unknown:
        raise read.fail(f"{where}: wait_until: unknown field(s): {', '.join(unknown)}")
    time = None
    if "time" in spec:
        time = clock_minutes(spec["time"])
        if time is None:
            raise read.fail(f"{where}: wait_until time must be HH:MM, got {spec['time']!r}")
    offset = 0
    if "offset" in spec:
        parsed = duration_ms(spec["offset"])
        if parsed is None:
            raise read.fail(f"{where}: offset needs a duration like -7d, got {spec['offset']!r}")
        offset = parsed
    if base == "trait":
        trait = spec["trait"]
        if not isinstance(trait, str) or not trait or spec.get("each") != "year":
            raise read.fail(f"{where}: wait_until trait needs a trait name and each: year")
        return WaitUntil(key, time=time, trait=trait, offset_ms=offset)
    if base == "order_field":
        name = spec["order_field"]
        if name not in ORDER_DATES:
            raise read.fail(f"{where}: unknown order_field {name!r}; one of {sorted(ORDER_DATES)}")
        return WaitUntil(key, time=time, order_field=name, offset_ms=offset)
    return WaitUntil(key, time=time)


def _policies(source: str, doc: dict[str, Any], names: Sequence[str]) -> Policies:
    raw = doc.get("policies", {}) or {}
    if not isinstance(raw, dict):
        raise DefinitionError(source, "policies", f"expected a mapping, got {raw!r}")
    read = field_reader(
        source,
        "policies",
        raw,
        {"frequency_caps", "quiet_hours", "priority", "suppress_during_stay"},
    )
    caps = []
    for index, cap in enumerate(read.get("frequency_caps", list, []), 1):
        ok = isinstance(cap, dict) and set(cap) == {"channel", "max", "per"}
        per = duration_ms(cap.get("per")) if ok else None
        if (
            not ok
            or cap["channel"] not in CHANNELS
            or not isinstance(cap["max"], int)
            or cap["max"] < 1
            or per is None
            or per <= 0
        ):
            raise read.fail(
                f"frequency_caps #{index}: needs {{channel: email, max: <n ≥ 1>, "
                f"per: <duration>}}, got {cap!r}"
            )
        caps.append(FrequencyCap(cap["channel"], cap["max"], per))
    quiet = None
    default_zone = "UTC"
    if "quiet_hours" in raw:
        spec = read.get("quiet_hours", dict)
        start, end = clock_minutes(spec.get("from")), clock_minutes(spec.get("to"))
        extra = sorted(set(spec) - {"from", "to", "timezone_trait", "default_timezone"})
        if start is None or end is None or start == end or extra:
            raise read.fail(f"quiet_hours needs from and to as distinct HH:MM, got {spec!r}")
        default_zone = str(spec.get("default_timezone", "UTC"))
        try:
            ZoneInfo(default_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise read.fail(f"quiet_hours: unknown default_timezone {default_zone!r}") from None
        quiet = QuietHours(start, end, str(spec.get("timezone_trait", "timezone")), default_zone)
    lists = {}
    for key in ("priority", "suppress_during_stay"):
        listed: list[Any] = read.get(key, list, [])
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise read.fail(f"{key}: unknown journey(s) {unknown}")
        if len(set(listed)) != len(listed):
            raise read.fail(f"{key}: a journey is listed twice")
        lists[key] = tuple(listed)
    return Policies(
        tuple(caps), quiet, lists["priority"], lists["suppress_during_stay"], default_zone
    )
