"""The flow engine: ``advance(book, profile, stimulus, now) -> sends, journey events, next due``.

Pure. A profile's :class:`Book` holds one :class:`FlowState` per journey it ever entered,
the sends it received within the longest cap window, and the sequence of its journey
events. A stimulus is an event (with the segment changes it caused) or a :class:`Timer`:
the instant the book's ``next_due`` came. Every decision is a :class:`JourneyEvent`; sends
are :class:`~streams.journeys.rules.JourneyTrigger` with ids from journey, step, profile and
entry, so a step repeated after a crash has the id it had.

Times: an event's steps run at the instant given (the event's time), a due step at its due
time however late the timer fired, so replays and late timers decide exactly alike.
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.events import ENTERED, EXITED, Event, EventKind, SegmentChange
from streams.journeys.definitions import (
    PAYLOAD_FIELDS,
    Branch,
    Flows,
    JourneyDefinition,
    Jump,
    PayloadSource,
    Send,
    TriggerKind,
    TriggerRule,
    Wait,
    WaitUntil,
)
from streams.journeys.rules import JourneyTrigger, ineligibility, trigger_id
from streams.profiles.model import Profile, order_stay, stay_ends


class Kind(StrEnum):
    ENTERED = "entered"
    STEP_SENT = "step_sent"
    WAITING = "waiting"
    EXITED = "exited"
    SUPPRESSED = "suppressed"


class Reason(StrEnum):
    # exited
    GOAL = "goal"
    EXIT_RULE = "exit_rule"
    CONSENT = "consent"
    DEFINITION_CHANGED = "definition_changed"
    COMPLETED = "completed"
    NO_DATE = "no_date"  # a stay-relative wait for an order without that date
    ERASED = "erased"  # the profile was erased (a privacy request)
    # suppressed
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"
    STAY = "stay"
    HOLDOUT = "holdout"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class JourneyEvent:
    """One decision about one profile in one journey (the journey-events topic's value)."""

    event_id: str
    profile_id: str
    journey: str
    kind: Kind
    step: str | None
    reason: Reason | None
    due_at: int | None  # waiting / deferred: when the journey goes on
    occurred_at: int
    sequence: int
    entry_id: str
    cause_id: str
    # suppressed: "deferred" (sent later if still valid) or "skipped" (never sent).
    action: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "profile_id": self.profile_id,
            "journey": self.journey,
            "kind": self.kind.value,
            "step": self.step,
            "reason": None if self.reason is None else self.reason.value,
            "action": self.action,
            "due_at": self.due_at,
            "occurred_at": self.occurred_at,
            "sequence": self.sequence,
            "entry_id": self.entry_id,
            "cause_id": self.cause_id,
        }


@dataclass(frozen=True, slots=True)
class FlowState:
    entry_id: str  # the cause that entered the journey: part of every trigger id
    entered_at: int
    position: str | None  # the key of the next step; None: out of the journey
    due_at: int | None = None  # the end of a wait, or the slot of a deferred send
    held_since: int | None = None  # when the send at ``position`` was first deferred
    held_for: Reason | None = None  # why it was last deferred
    parked: bool = False  # waiting for a date the profile does not have yet
    sends: int = 0
    segment: str | None = None  # the segment whose change entered it, for payloads
    dates: tuple[tuple[str, int], ...] = ()  # the entry order's stay dates
    exited_at: int | None = None
    exit_reason: Reason | None = None
    rounds: int = 0  # the rounds a yearly journey went back to its yearly wait

    @property
    def active(self) -> bool:
        return self.position is not None

    @property
    def occasion(self) -> str:
        """What trigger ids name: the entry, and the round of a yearly journey after its first."""
        return f"{self.entry_id}#{self.rounds}" if self.rounds else self.entry_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "entered_at": self.entered_at,
            "position": self.position,
            "due_at": self.due_at,
            "held_since": self.held_since,
            "held_for": None if self.held_for is None else self.held_for.value,
            "parked": self.parked,
            "sends": self.sends,
            "segment": self.segment,
            "dates": dict(self.dates),
            "exited_at": self.exited_at,
            "exit_reason": None if self.exit_reason is None else self.exit_reason.value,
            "rounds": self.rounds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FlowState:
        reason = d.get("exit_reason")
        return cls(
            entry_id=d["entry_id"],
            entered_at=d["entered_at"],
            position=d["position"],
            due_at=d.get("due_at"),
            held_since=d.get("held_since"),
            held_for=None if d.get("held_for") is None else Reason(d["held_for"]),
            parked=d.get("parked", False),
            sends=d.get("sends", 0),
            segment=d.get("segment"),
            dates=tuple(sorted(d.get("dates", {}).items())),
            exited_at=d.get("exited_at"),
            exit_reason=None if reason is None else Reason(reason),
            rounds=d.get("rounds", 0),
        )


@dataclass(frozen=True, slots=True)
class Book:
    """A profile's journeys: plain data, stored with the profile (:meth:`to_dict`)."""

    states: Mapping[str, FlowState] = field(default_factory=dict)
    sent: tuple[tuple[int, str], ...] = ()  # (at, channel), oldest first, within the window
    sequence: int = 0
    rules: str = ""  # the Flows.fingerprint the states were made under
    # The latest journey events, oldest first: (at, journey, kind, step, reason).
    history: tuple[tuple[int, str, str, str | None, str | None], ...] = ()

    @property
    def blank(self) -> bool:
        """Nothing worth storing: no journey ever entered, no send within a cap window."""
        return not self.states and not self.sent

    @property
    def next_due(self) -> int | None:
        dues = [s.due_at for s in self.states.values() if s.active and s.due_at is not None]
        return min(dues, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "states": {name: s.to_dict() for name, s in self.states.items()},
            "sent": [list(s) for s in self.sent],
            "sequence": self.sequence,
            "rules": self.rules,
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Book:
        if not d:
            return EMPTY
        return cls(
            {name: FlowState.from_dict(s) for name, s in d.get("states", {}).items()},
            tuple((int(at), str(channel)) for at, channel in d.get("sent", ())),
            d.get("sequence", 0),
            d.get("rules", ""),
            tuple((h[0], h[1], h[2], h[3], h[4]) for h in d.get("history", ())),
        )


EMPTY = Book()
HISTORY_LIMIT = 32  # journey events a profile keeps for the API (the topic has them all)


class Occurrence(NamedTuple):
    """An event and what it caused: the stimulus of most advances."""

    event: Event | None  # None for a merge: only segment changes can match then
    changes: Sequence[SegmentChange]
    cause_id: str
    # The profile evaluated under new definitions, no event: current members of the entry
    # segment of a ``backfill`` journey enter it (never entered before), no other journey
    # is entered (only future entries).
    backfill: bool = False


class Timer(NamedTuple):
    """The book's ``next_due`` has come: every step due by ``at`` runs, at its due time."""

    at: int


class Redefined(NamedTuple):
    """The definitions changed: states continue where their step still exists."""

    cause_id: str


Stimulus = Occurrence | Timer | Redefined


@dataclass(frozen=True, slots=True)
class Advance:
    book: Book
    sends: tuple[JourneyTrigger, ...] = ()
    events: tuple[JourneyEvent, ...] = ()

    @property
    def next_due(self) -> int | None:
        return self.book.next_due


def advance(
    flows: Flows,
    book: Book,
    profile: Profile,
    stimulus: Stimulus,
    now: int,
    *,
    before: Profile | None = None,
    entered: Mapping[str, Mapping[str, int]] | None = None,
) -> Advance:
    """What ``stimulus`` at ``now`` does to ``profile``'s journeys.

    ``profile`` is the profile after the event (its segments included); ``before`` the one
    before it (payloads may compare). ``entered`` is the one-step bookkeeping of profiles
    from before flows (journey -> step -> ms): a journey in it counts as entered then.
    """
    run = _Run(flows, book, profile, before or profile, now)
    if book.states and book.rules != flows.fingerprint:
        run.redefine(f"definitions:{flows.fingerprint}")
    if isinstance(stimulus, Timer):
        run.fire(stimulus.at)
    elif isinstance(stimulus, Redefined):
        run.redefine(stimulus.cause_id)
    else:
        run.occur(stimulus, entered or {})
    return run.result()


def concerns(
    flows: Flows, book: Mapping[str, Any], before: Profile, after: Profile, occurrence: Occurrence
) -> bool:
    """Whether :func:`advance` could do anything for ``occurrence``: False lets the caller
    skip decoding the stored ``book`` (its plain form) for most events.

    Something can happen only when a rule (entry or exit) matches, what decides who may be
    mailed changed, a state waits for a trait, or the states were made under other
    definitions.
    """
    event = occurrence.event
    if occurrence.backfill and flows.backfilled:
        return True
    candidates = () if event is None else flows.event_rules.get(event.kind.value, ())
    if occurrence.changes:
        candidates = (*candidates, *flows.segment_rules)
    for rule in candidates:
        if matches(rule, occurrence)[0]:
            return True
    if (
        before.consent != after.consent
        or before.newsletter != after.newsletter
        or before.email != after.email
        or _blocking(before) != _blocking(after)
    ):
        return True
    states = book.get("states") or {}
    if not states:
        return False
    if book.get("rules") != flows.fingerprint:
        return True
    # A state waiting for a trait (a birthday) moves only when a trait does.
    return before.traits != after.traits and any(s.get("parked") for s in states.values())


def _blocking(profile: Profile) -> tuple[int, int]:
    counts = profile.email_counts
    return counts["bounced"], counts["complained"]


def holdout(journey: JourneyDefinition, profile_id: str) -> bool:
    """Whether ``profile_id`` is held out of ``journey``: the same answer every time."""
    if journey.holdout_percent <= 0:
        return False
    digest = hashlib.sha256(f"{journey.name}|{profile_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < journey.holdout_percent * 100


def blocked(journey: JourneyDefinition, profile: Profile) -> str | None:
    """Why ``profile`` may not get ``journey``'s mail (consent, subscription, bounce), or None."""
    if journey.transactional:
        return "no_email" if profile.email is None else None
    return ineligibility(journey, profile)


def time_zone(flows: Flows, profile: Profile) -> ZoneInfo:
    quiet = flows.policies.quiet_hours
    trait = quiet.timezone_trait if quiet else "timezone"
    default = quiet.default_timezone if quiet else flows.policies.default_timezone
    stamped = profile.traits.get(trait)
    for name in (stamped.value if stamped else None, default):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def next_clock_time(at: int, minutes: int, zone: ZoneInfo) -> int:
    """The first instant at or after ``at`` when the clock in ``zone`` shows ``minutes``."""
    local = datetime.fromtimestamp(at / 1000, zone)
    candidate = local.replace(hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0)
    if candidate < local:
        candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
    return int(candidate.timestamp() * 1000)


def on_the_day(at: int, minutes: int, zone: ZoneInfo) -> int:
    """``minutes`` after local midnight on the day of ``at`` in ``zone``."""
    local = datetime.fromtimestamp(at / 1000, zone)
    when = datetime(local.year, local.month, local.day, minutes // 60, minutes % 60, tzinfo=zone)
    return int(when.timestamp() * 1000)


def quiet_until(flows: Flows, profile: Profile, at: int) -> int | None:
    """The end of the quiet hours ``at`` falls in, in the profile's time zone; None outside."""
    quiet = flows.policies.quiet_hours
    if quiet is None:
        return None
    zone = time_zone(flows, profile)
    local = datetime.fromtimestamp(at / 1000, zone)
    if not quiet.contains(local.hour * 60 + local.minute):
        return None
    return next_clock_time(at, quiet.end, zone)


def cap_slot(flows: Flows, sent: Sequence[tuple[int, str]], channel: str, at: int) -> int | None:
    """The first instant from which one more ``channel`` send at ``at`` keeps every cap;
    None when it does now."""
    slot = None
    for cap in flows.policies.frequency_caps:
        if cap.channel != channel:
            continue
        inside = sorted(t for t, c in sent if c == channel and at - cap.per_ms < t)
        if len(inside) >= cap.max:
            free = inside[len(inside) - cap.max] + cap.per_ms
            slot = free if slot is None else max(slot, free)
    return slot


def birthday_after(value: str, at: int, minutes: int, zone: ZoneInfo) -> int | None:
    """The first local ``minutes`` at or after ``at`` on the month and day of ``value``
    ("1990-05-17", "05-17"); None when it is no date. 29 February is kept on 28 February
    in common years, so it comes every year too."""
    parts = value.strip().split("-")
    try:
        month, day = int(parts[-2]), int(parts[-1])
        date(2000, month, day)  # a leap year: 29 February is a date
    except (ValueError, IndexError):
        return None

    def on(year: int) -> datetime:
        leap_day = (month, day) == (2, 29) and not calendar.isleap(year)
        return datetime(year, month, 28 if leap_day else day, *divmod(minutes, 60), tzinfo=zone)

    local = datetime.fromtimestamp(at / 1000, zone)
    when = on(local.year)
    if when < local:
        when = on(local.year + 1)
    return int(when.timestamp() * 1000)


def stay_dates(event: Event | None) -> tuple[tuple[str, int], ...]:
    """The stay an order books: its items' earliest ``starts_at`` and latest ``ends_at``."""
    if event is None or event.kind is not EventKind.ORDER:
        return ()
    starts, ends = order_stay(event.body)
    dates = []
    if ends is not None:
        dates.append(("stay_ends_at", ends))
    if starts is not None:
        dates.append(("stay_starts_at", starts))
    return tuple(dates)


_CHANGE_FOR = {TriggerKind.SEGMENT_ENTERED: ENTERED, TriggerKind.SEGMENT_EXITED: EXITED}

# The latest time of an event the profile keeps, by exit rule: events of different topics
# arrive in any order, so an order placed after the cart but applied before it is found here.
_LATEST: dict[str, Callable[[Profile], int | None]] = {
    "order.placed": lambda p: p.last_order_at,
    "page-view.add_to_cart": lambda p: p.last_add_to_cart_at,
    "email.opened": lambda p: p.last_open_at,
    "email.clicked": lambda p: p.last_click_at,
}


def happened_after(rule: TriggerRule, profile: Profile, at: int) -> bool:
    """Whether an event ``rule`` matches is known to have occurred after ``at``."""
    latest = _LATEST.get(rule.pattern) if rule.kind is TriggerKind.EVENT else None
    when = None if latest is None else latest(profile)
    return when is not None and when > at


def matches(rule: TriggerRule, occurrence: Occurrence) -> tuple[bool, str | None]:
    """Whether ``occurrence`` matches ``rule``, and the segment that did (first by name)."""
    if rule.kind is TriggerKind.EVENT:
        event = occurrence.event
        return event is not None and rule.matches_event(event), None
    wanted = _CHANGE_FOR[rule.kind]
    for change in occurrence.changes:
        if change.change == wanted and rule.matches_segment(change.segment):
            return True, change.segment
    return False, None


class _Run:
    """One advance: the book as it changes, and what it emits, in order."""

    def __init__(
        self, flows: Flows, book: Book, profile: Profile, before: Profile, now: int
    ) -> None:
        self.flows, self.profile, self.before, self.now = flows, profile, before, now
        self.states = dict(book.states)
        self.sent = list(book.sent)
        self.sequence = book.sequence
        self.history = list(book.history)
        self.sends: list[JourneyTrigger] = []
        self.events: list[JourneyEvent] = []
        self.event: Event | None = None
        self.cause_id = ""
        self.slots_taken: set[str] = set()  # journeys that sent in this advance

    # -- stimuli --------------------------------------------------------------------------

    def occur(self, occurrence: Occurrence, entered: Mapping[str, Mapping[str, int]]) -> None:
        self.event, self.cause_id = occurrence.event, occurrence.cause_id
        for journey in self.flows.journeys:
            state = self.states.get(journey.name)
            if state is None or not state.active:
                continue
            if blocked(journey, self.profile) is not None:
                self.exit(journey, state, Reason.CONSENT, self.now)
                continue
            if state.entry_id == occurrence.cause_id:
                continue  # what entered it does not end it (nor does its replay)
            for rule in journey.exit_on:
                if matches(rule.rule, occurrence)[0]:
                    reason = Reason.GOAL if rule.goal else Reason.EXIT_RULE
                    self.exit(journey, state, reason, self.now)
                    break
        for journey in () if occurrence.backfill else self.flows.journeys:
            hit, segment = matches(journey.entry, occurrence)
            if hit and self.may_enter(journey, entered):
                self.admit(journey, segment, occurrence)
        for journey in self.flows.backfilled if occurrence.backfill else ():
            member = next(
                (s for s in self.profile.segments if journey.entry.matches_segment(s)), None
            )
            never = journey.name not in self.states and journey.name not in entered
            if member is not None and never and self.may_enter(journey, entered):
                self.admit(journey, member, occurrence)
        # Steps run in priority order, so the first journey takes a capped slot.
        for journey in self.flows.journeys:
            state = self.states.get(journey.name)
            if state is not None and state.active and (state.due_at is None or state.parked):
                self.run(journey, state, self.now)

    def stay_over(self, at: int) -> int | None:
        """When the profile's stay current at ``at`` ends (the latest of those current)."""
        return stay_ends(self.profile.stays, at)

    def fire(self, at: int) -> None:
        self.cause_id = f"timer:{at}"
        due = [
            (state.due_at, rank, journey)
            for rank, journey in enumerate(self.flows.journeys)
            if (state := self.states.get(journey.name)) is not None
            and state.active
            and state.due_at is not None
            and state.due_at <= at
        ]
        for due_at, _, journey in sorted(due, key=lambda d: (d[0], d[1])):
            state = self.states[journey.name]
            if blocked(journey, self.profile) is not None:
                self.exit(journey, state, Reason.CONSENT, due_at)
                continue
            self.run(journey, state, due_at)

    def redefine(self, cause_id: str) -> None:
        self.cause_id = cause_id
        for name, state in list(self.states.items()):
            if not state.active:
                continue
            journey = self.flows.by_name.get(name)
            if journey is None or state.position not in journey.positions:
                self.exit_named(name, state, Reason.DEFINITION_CHANGED, self.now, state.position)

    # -- transitions ----------------------------------------------------------------------

    def may_enter(
        self, journey: JourneyDefinition, entered: Mapping[str, Mapping[str, int]]
    ) -> bool:
        if blocked(journey, self.profile) is not None:
            return False
        state = self.states.get(journey.name)
        legacy = entered.get(journey.name)
        if state is not None and (state.active or state.entry_id == self.cause_id):
            return False
        last = state.entered_at if state is not None else None
        if last is None and legacy:
            last = max(legacy.values())
        if last is None:
            return True
        return journey.re_entry_ms is not None and self.now - last >= journey.re_entry_ms

    def admit(
        self, journey: JourneyDefinition, segment: str | None, occurrence: Occurrence
    ) -> None:
        """Enter ``journey``, and leave it at once when an exit event is known to have come
        after now."""
        self.enter(journey, segment, occurrence)
        state = self.states[journey.name]
        for rule in journey.exit_on:
            if happened_after(rule.rule, self.profile, self.now):
                reason = Reason.GOAL if rule.goal else Reason.EXIT_RULE
                self.exit(journey, state, reason, self.now)
                break

    def enter(
        self, journey: JourneyDefinition, segment: str | None, occurrence: Occurrence
    ) -> None:
        state = FlowState(
            entry_id=occurrence.cause_id,
            entered_at=self.now,
            position=journey.program[0].key,
            segment=segment,
            dates=stay_dates(occurrence.event),
        )
        self.states[journey.name] = state
        self.emit(journey.name, state, Kind.ENTERED, self.now)

    def exit(self, journey: JourneyDefinition, state: FlowState, reason: Reason, at: int) -> None:
        self.exit_named(journey.name, state, reason, at, state.position)

    def exit_named(
        self, name: str, state: FlowState, reason: Reason, at: int, step: str | None
    ) -> None:
        out = replace(
            state, position=None, due_at=None, parked=False, exited_at=at, exit_reason=reason
        )
        self.states[name] = out
        self.emit(name, out, Kind.EXITED, at, step=step, reason=reason)

    def run(self, journey: JourneyDefinition, state: FlowState, at: int) -> None:
        """Go through ``journey``'s steps from ``state.position`` until a wait or the end."""
        program = journey.program
        i = journey.positions.get(state.position or "")
        if i is None:  # made under other definitions, and not redefined: cannot go on
            self.exit(journey, state, Reason.DEFINITION_CHANGED, at)
            return
        resumed = looped = False
        if state.due_at is not None and not state.parked:
            if at < state.due_at:
                return
            at, resumed = state.due_at, True
            state = replace(state, due_at=None)
        while True:
            if i == len(program):
                if journey.yearly_at is None:
                    break
                i, looped = journey.yearly_at, True
                state = replace(state, rounds=state.rounds + 1)
            ins = program[i]
            if isinstance(ins, Jump):
                i = ins.to
                continue
            if isinstance(ins, Branch):
                i = i + 1 if ins.test(self.profile, at) else journey.else_at[ins.key]
                continue
            if state.position != ins.key:  # a new state only where one is kept or emitted
                state = replace(state, position=ins.key)
            if isinstance(ins, Wait | WaitUntil):
                if resumed:
                    resumed = False
                    i += 1
                    continue
                # A yearly wait gone back to waits for the next round, not this one.
                since = at + 1 if looped else at
                looped = False
                due = ins.ms + at if isinstance(ins, Wait) else self.until(ins, state, since)
                if due is None and isinstance(ins, WaitUntil) and ins.trait is not None:
                    # Waits for the trait: tried again at the profile's next event.
                    if not state.parked:
                        state = replace(state, parked=True)
                        self.emit(journey.name, state, Kind.WAITING, at, step=ins.key)
                    self.states[journey.name] = state
                    return
                if due is None:
                    self.exit(journey, state, Reason.NO_DATE, at)
                    return
                if due <= at:
                    i += 1
                    continue
                state = replace(state, due_at=due, parked=False)
                self.states[journey.name] = state
                self.emit(journey.name, state, Kind.WAITING, at, step=ins.key, due=due)
                return
            outcome = self.send(journey, ins, state, at, resumed)
            resumed = False
            if outcome is None:  # deferred, or out of the journey
                return
            state = outcome
            i += 1
        self.exit(journey, replace(state, position="end"), Reason.COMPLETED, at)

    def until(self, step: WaitUntil, state: FlowState, at: int) -> int | None:
        zone = time_zone(self.flows, self.profile)
        if step.trait is not None:
            stamped = self.profile.traits.get(step.trait)
            if stamped is None or not stamped.value:
                return None
            minutes = 9 * 60 if step.time is None else step.time
            # The first date whose offset instant is not before ``at``.
            date_at = birthday_after(stamped.value, at - step.offset_ms, minutes, zone)
            return None if date_at is None else date_at + step.offset_ms
        if step.order_field is not None:
            base = dict(state.dates).get(step.order_field)
            if base is None:
                return None
            due = base + step.offset_ms
            return due if step.time is None else on_the_day(due, step.time, zone)
        assert step.time is not None
        return next_clock_time(at, step.time, zone)

    def send(
        self, journey: JourneyDefinition, step: Send, state: FlowState, at: int, resumed: bool
    ) -> FlowState | None:
        """The state after ``step``, or None when the journey waits or left."""
        name = journey.name
        if blocked(journey, self.profile) is not None:
            self.exit(journey, state, Reason.CONSENT, at)
            return None
        held = state.held_since
        if held is not None and step.expires_ms is not None and at - held > step.expires_ms:
            reason = state.held_for or Reason.FREQUENCY_CAP
            self.emit(name, state, Kind.SUPPRESSED, at, step.key, reason, action="skipped")
            return replace(state, held_since=None, held_for=None)
        if not journey.transactional and holdout(journey, self.profile.profile_id):
            self.emit(name, state, Kind.SUPPRESSED, at, step.key, Reason.HOLDOUT, action="skipped")
            return state
        if name in self.flows.policies.suppress_during_stay:
            stay_ends = self.stay_over(at)
            if stay_ends is not None:
                waiting = replace(
                    state, due_at=stay_ends, held_since=state.held_since or at, held_for=Reason.STAY
                )
                self.states[name] = waiting
                self.emit(
                    name, waiting, Kind.SUPPRESSED, at, step.key, Reason.STAY, stay_ends, "deferred"
                )
                return None
        if not journey.transactional:
            quiet = quiet_until(self.flows, self.profile, at)
            slot = cap_slot(self.flows, self.sent, step.channel, at)
            if quiet is not None or slot is not None:
                if quiet is not None and (slot is None or quiet >= slot):
                    reason, due = Reason.QUIET_HOURS, quiet
                else:
                    assert slot is not None
                    reason, due = Reason.FREQUENCY_CAP, max(slot, quiet or slot)
                    if self.slots_taken - {name}:
                        reason = Reason.PRIORITY
                waiting = replace(
                    state, due_at=due, held_since=state.held_since or at, held_for=reason
                )
                self.states[name] = waiting
                self.emit(name, waiting, Kind.SUPPRESSED, at, step.key, reason, due, "deferred")
                return None
        email = self.profile.email
        assert email is not None  # blocked() checked it
        source = PayloadSource(self.before, self.profile, self.event, state.segment)
        trigger = JourneyTrigger(
            trigger_id=trigger_id(name, step.template, self.profile.profile_id, state.occasion),
            journey=name,
            step=step.template,
            profile_id=self.profile.profile_id,
            email=email,
            occurred_at=at,
            cause_event_id=state.entry_id,
            payload={field: PAYLOAD_FIELDS[field](source) for field in step.payload},
        )
        self.sends.append(trigger)
        self.slots_taken.add(name)
        if not journey.transactional:
            self.sent.append((at, step.channel))
        sent = replace(state, sends=state.sends + 1, held_since=None, held_for=None)
        self.states[name] = sent
        self.emit(name, sent, Kind.STEP_SENT, at, step.key)
        return sent

    def emit(
        self,
        journey: str,
        state: FlowState,
        kind: Kind,
        at: int,
        step: str | None = None,
        reason: Reason | None = None,
        due: int | None = None,
        action: str | None = None,
    ) -> None:
        self.sequence += 1
        self.history.append((at, journey, kind.value, step, reason and reason.value))
        profile_id = self.profile.profile_id
        key = f"{profile_id}|{journey}|{state.entry_id}|{kind}|{step}|{reason}|{at}|{due}"
        self.events.append(
            JourneyEvent(
                event_id=hashlib.sha256(key.encode()).hexdigest()[:32],
                profile_id=profile_id,
                journey=journey,
                kind=kind,
                step=step,
                reason=reason,
                due_at=due,
                occurred_at=at,
                sequence=self.sequence,
                entry_id=state.entry_id,
                cause_id=self.cause_id,
                action=action,
            )
        )

    def result(self) -> Advance:
        window = self.flows.window_ms
        horizon = max((t for t, _ in self.sent), default=0) - window
        sent = tuple(sorted(s for s in self.sent if s[0] > horizon)) if window else ()
        rules = self.flows.fingerprint if self.states else ""
        history = tuple(self.history[-HISTORY_LIMIT:])
        book = Book(self.states, sent, self.sequence, rules, history)
        return Advance(book, tuple(self.sends), tuple(self.events))


def summary(book: Book, flows: Flows) -> dict[str, Any]:
    """The API's view of a book: each journey's state, the next due time, the history."""
    order = {j.name: i for i, j in enumerate(flows.journeys)}
    states = sorted(book.states.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return {
        "next_due_at": book.next_due,
        "journeys": [
            {"journey": name, "active": state.active, **state.to_dict()} for name, state in states
        ],
        "history": [
            {"at": at, "journey": journey, "kind": kind, "step": step, "reason": reason}
            for at, journey, kind, step, reason in book.history
        ],
    }


def erase(flows: Flows, book: Book, profile: Profile, cause_id: str, now: int) -> Advance:
    """Every active journey of ``profile`` exited with reason ``erased``: the profile is
    being erased (the book goes with it)."""
    run = _Run(flows, book, profile, profile, now)
    run.cause_id = cause_id
    for name, state in list(run.states.items()):
        if state.active:
            run.exit_named(name, state, Reason.ERASED, now, state.position)
    return run.result()
