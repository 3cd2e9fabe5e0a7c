"""The flow engine on a virtual clock: waits, exits, consent, caps, priority, quiet hours,
holdout, re-entry, dates, changed definitions, and properties over random event streams."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import Codec
from streams.events import Event
from streams.journeys.definitions import Flows, load_flows
from streams.journeys.flow import Book, Occurrence, Timer, advance, holdout
from streams.journeys.rules import trigger_id
from streams.profiles.model import Profile
from streams.segments.conditions import compile_condition
from streams.segments.definitions import load_segments
from streams.settings import OutputFormat
from streams.steps import process as process_module
from streams.steps.messages import Out, RoutedEvent
from streams.steps.process import Rules, process, recheck
from streams.steps.profile import profile_step
from streams.steps.simulate import Simulation, simulate
from tests.unit.test_reducer import email_event, event, identify, order, page_view

AMS = ZoneInfo("Europe/Amsterdam")
H = 3_600_000
D = 24 * H
EMAIL = "a@b.c"
PID = "email:a@b.c"  # the simulation's profile id: the strongest identifier key
SEGMENTS = tuple(load_segments(None))


def local(day: int, hour: int, minute: int = 0, zone: ZoneInfo = AMS) -> int:
    """Epoch ms of a local time in March 2024 (no daylight-saving change before the 31st)."""
    return int(datetime(2024, 3, day, hour, minute, tzinfo=zone).timestamp() * 1000)


START = local(4, 10)  # a Monday, 10:00 in Amsterdam


def rules_for(tmp_path: Path, text: str) -> Rules:
    path = tmp_path / "journeys.yaml"
    path.write_text(text)
    flows = load_flows(path, [s.name for s in SEGMENTS], compile_condition)
    return Rules(SEGMENTS, flows.journeys, policies=flows.policies)


SHIPPED = Rules.load()


def signup(at: int = START - H, traits: dict[str, str] | None = None) -> Event:
    return identify(
        {"first_name": "Ann", **(traits or {})},
        "subscribed",
        {"email_marketing": True},
        email=EMAIL,
        at=at,
        event_id=f"signup-{at}",
    )


def cart(at: int, product: str = "pram", event_id: str | None = None) -> Event:
    return page_view("toys", product, "add_to_cart", at=at, email=EMAIL, event_id=event_id)


def placed(at: int, **kw: Any) -> Event:
    return order("placed", [("pram", "toys")], at=at, email=EMAIL, **kw)


def journey(sim: Simulation, name: str) -> list[dict[str, Any]]:
    return [e for e in sim.journey_events if e["journey"] == name]


def sends(sim: Simulation, name: str) -> list[dict[str, Any]]:
    return [s for s in sim.sends if s["journey"] == name]


# -- waits and exits -----------------------------------------------------------------------


def test_the_cart_reminder_goes_after_the_wait_not_before() -> None:
    add = cart(START, event_id="cart-1")
    sim = simulate(SHIPPED, [signup(), add], until=START + H - 1)
    assert sends(sim, "abandoned_cart") == []
    entered, waiting = journey(sim, "abandoned_cart")
    assert (entered["kind"], waiting["kind"], waiting["due_at"]) == (
        "entered",
        "waiting",
        START + H,
    )
    assert sim.profiles[PID].journey_due_at == START + H

    sim.run_until(START + H)
    (reminder,) = sends(sim, "abandoned_cart")
    assert reminder["step"] == "cart_reminder_1"
    assert reminder["occurred_at"] == START + H
    assert reminder["payload"] == {"first_name": "Ann", "cart_items": ["pram"]}
    # From journey, step, profile and entry: the same in every run, crashed or not.
    assert reminder["trigger_id"] == trigger_id("abandoned_cart", "cart_reminder_1", PID, "cart-1")


def test_an_order_during_the_wait_exits_at_once_and_nothing_is_sent() -> None:
    sim = simulate(
        SHIPPED, [signup(), cart(START), placed(START + 30 * 60_000)], until=START + 3 * D
    )
    assert sends(sim, "abandoned_cart") == []
    exited = journey(sim, "abandoned_cart")[-1]
    assert (exited["kind"], exited["reason"], exited["occurred_at"]) == (
        "exited",
        "goal",
        START + 30 * 60_000,
    )
    # The wait is cancelled: no timer of this journey is left.
    state = Book.from_dict(sim.profiles[PID].journey_flows).states["abandoned_cart"]
    assert (state.position, state.due_at) == (None, None)


def test_an_order_read_after_the_due_time_but_placed_before_it_stops_the_reminder() -> None:
    """A worker down at the reminder's due time reads the order only after it: the order
    goes first, since it happened first, and the due step finds the journey exited."""
    sim = simulate(SHIPPED, [signup(), cart(START)], until=START + H - 1)
    waiting = sim.profiles[PID]
    assert waiting.journey_due_at == START + H
    order = placed(START + 30 * 60_000)
    read_late, read_later = (
        process(waiting, PID, order, SHIPPED, now_ms=now) for now in (START + 2 * H, START + D)
    )
    assert read_late == read_later  # the same whenever it is read
    cart_events = [e for e in read_late.journey_events if e.journey == "abandoned_cart"]
    assert [(e.kind, e.reason) for e in cart_events] == [("exited", "goal")]
    assert [t.journey for t in read_late.triggers] == ["post_purchase"]
    assert read_late.profile.journey_due_at != START + H


@pytest.mark.parametrize(
    "revoke",
    [
        lambda at: email_event("unsubscribed", at=at, email=EMAIL),
        lambda at: email_event("bounced", at=at, email=EMAIL),
        lambda at: email_event("complained", at=at, email=EMAIL),
        lambda at: identify(consent={"email_marketing": False}, at=at, email=EMAIL),
    ],
)
def test_revoked_consent_unsubscribe_bounce_or_complaint_exit_mid_wait(revoke: Any) -> None:
    sim = simulate(SHIPPED, [signup(), cart(START), revoke(START + 10 * 60_000)], until=START + D)
    assert sends(sim, "abandoned_cart") == []
    exited = journey(sim, "abandoned_cart")[-1]
    # At the event, not when the wait would have ended.
    assert (exited["kind"], exited["reason"]) == ("exited", "consent")
    assert exited["occurred_at"] == START + 10 * 60_000


def test_the_branch_reads_the_profile_when_it_is_reached() -> None:
    # welcome_3 only for a profile lacking first name or birthday.
    complete = simulate(SHIPPED, [signup(traits={"birthday": "1990-05-17"})], until=START + 8 * D)
    lacking = simulate(SHIPPED, [signup()], until=START + 8 * D)
    assert [s["step"] for s in sends(complete, "welcome")] == ["welcome_1", "welcome_2"]
    assert [s["step"] for s in sends(lacking, "welcome")] == ["welcome_1", "welcome_2", "welcome_3"]
    assert lacking.sends[0]["payload"]["missing_traits"] == ["language", "interests", "birthday"]
    assert journey(lacking, "welcome")[-1]["reason"] == "completed"


def test_wait_until_a_clock_time_in_the_profiles_time_zone(tmp_path: Path) -> None:
    rules = rules_for(
        tmp_path,
        """
journeys:
  - name: morning
    entry: {event: order.placed}
    consent: email_marketing
    steps: [{wait_until: {time: "10:00"}}, {send: hello}]
""",
    )
    ny = ZoneInfo("America/New_York")
    at = local(5, 15)
    zones: dict[str | None, list[int]] = {}
    for zone in ("Europe/Amsterdam", "America/New_York", None):
        told = {"timezone": zone} if zone else {}
        sim = simulate(rules, [signup(traits=told), placed(at)], until=at + 2 * D)
        zones[zone] = [s["occurred_at"] for s in sim.sends]
    assert zones["Europe/Amsterdam"] == [local(6, 10)]
    assert zones["America/New_York"] == [local(5, 10, zone=ny)]  # 09:00 there at the order
    # No trait and no quiet hours naming a default zone: UTC.
    assert zones[None] == [local(6, 10, zone=ZoneInfo("UTC"))]


def test_a_birthday_waits_for_the_trait_and_then_for_the_day() -> None:
    sim = simulate(SHIPPED, [signup()], until=START + D)
    parked = [e for e in journey(sim, "birthday") if e["kind"] == "waiting"]
    assert [e["due_at"] for e in parked] == [None]
    told = identify({"birthday": "1990-05-17"}, at=START + D, email=EMAIL)
    sim.apply(told)
    due = journey(sim, "birthday")[-1]["due_at"]
    assert due == int(datetime(2024, 5, 17, 9, tzinfo=AMS).timestamp() * 1000)
    sim.run_until(due)
    assert [s["step"] for s in sends(sim, "birthday")] == ["birthday_1"]


def test_stay_mails_are_placed_around_the_stay_and_an_order_without_one_leaves() -> None:
    starts, ends = local(20, 15), local(27, 10)
    booking = event(
        placed(START).kind,
        {
            "order_id": "o-stay",
            "status": "placed",
            "total": 500.0,
            "currency": "EUR",
            "items": [
                {
                    "product_id": "cabin",
                    "category": "stay",
                    "quantity": 1,
                    "unit_price": 500.0,
                    "starts_at": starts,
                    "ends_at": ends,
                }
            ],
        },
        at=START,
        email=EMAIL,
    )
    sim = simulate(SHIPPED, [signup(), booking], until=ends + 3 * D)
    assert [(s["step"], s["occurred_at"]) for s in sends(sim, "stay")] == [
        ("pre_arrival", local(13, 10)),  # 10:00 on the day 7 days before
        ("review_request", local(28, 10)),
    ]
    plain = simulate(SHIPPED, [signup(), placed(START)], until=START + D)
    assert journey(plain, "stay")[-1]["reason"] == "no_date"


# -- caps, priority, quiet hours, holdout ---------------------------------------------------

CAPPED = """
policies:
  frequency_caps: [{channel: email, max: 1, per: 1d}]
  priority: [important, promo]
journeys:
  - name: promo
    entry: {event: order.placed}
    consent: email_marketing
    re_entry: {after: 0s}
    steps: [{send: promo_1}]
  - name: important
    entry: {event: order.placed}
    consent: email_marketing
    re_entry: {after: 0s}
    steps: [{send: important_1}]
  - name: receipt
    entry: {event: order.placed}
    consent: email_marketing
    transactional: true
    re_entry: {after: 0s}
    steps: [{send: receipt}]
"""


def test_the_higher_priority_takes_the_capped_slot_the_other_is_deferred(tmp_path: Path) -> None:
    rules = rules_for(tmp_path, CAPPED)
    sim = simulate(rules, [signup(), placed(START)], until=START + 2 * D)
    assert [(s["journey"], s["occurred_at"]) for s in sim.sends] == [
        ("important", START),
        ("receipt", START),  # transactional: outside the caps
        ("promo", START + D),  # the next free slot
    ]
    (held,) = [e for e in sim.journey_events if e["kind"] == "suppressed"]
    assert (held["journey"], held["reason"], held["action"], held["due_at"]) == (
        "promo",
        "priority",
        "deferred",
        START + D,
    )


def test_a_deferred_send_past_its_expiry_is_skipped_with_an_event(tmp_path: Path) -> None:
    rules = rules_for(
        tmp_path,
        CAPPED.replace("steps: [{send: promo_1}]", "steps: [{send: promo_1, expires: 1h}]"),
    )
    sim = simulate(rules, [signup(), placed(START)], until=START + 2 * D)
    assert [s["journey"] for s in sim.sends] == ["important", "receipt"]
    suppressed = [
        (e["reason"], e["action"]) for e in sim.journey_events if e["kind"] == "suppressed"
    ]
    assert suppressed == [("priority", "deferred"), ("priority", "skipped")]


def test_quiet_hours_defer_to_the_end_of_the_window_in_the_profiles_zone() -> None:
    late = local(4, 20, 30)  # the reminder falls due at 21:30: quiet
    sim = simulate(SHIPPED, [signup(), cart(late)], until=late + D)
    held = [e for e in journey(sim, "abandoned_cart") if e["kind"] == "suppressed"]
    assert [(e["reason"], e["due_at"]) for e in held] == [("quiet_hours", local(5, 8))]
    assert [s["occurred_at"] for s in sends(sim, "abandoned_cart")] == [local(5, 8)]


def test_holdout_is_by_profile_id_and_held_out_profiles_get_events_not_sends(
    tmp_path: Path,
) -> None:
    rules = rules_for(
        tmp_path,
        """
journeys:
  - name: held
    entry: {event: order.placed}
    consent: email_marketing
    holdout: 100%
    steps: [{send: never_sent}]
""",
    )
    sim = simulate(rules, [signup(), placed(START)], until=START + D)
    assert sim.sends == []
    kinds = [(e["kind"], e["reason"]) for e in sim.journey_events]
    assert kinds == [("entered", None), ("suppressed", "holdout"), ("exited", "completed")]
    receipt = replace(rules.flows.journeys[0], transactional=True)
    transactional = advance(
        Flows((receipt,)), Book(), sim.profiles[PID], Occurrence(placed(START + 1), (), "o"), START
    )
    assert [t.step for t in transactional.sends] == ["never_sent"]  # no holdout for receipts
    ten = replace(rules.flows.journeys[0], holdout_percent=10.0)
    held = sum(holdout(ten, f"p{i}") for i in range(10_000))
    assert 900 < held < 1_100
    assert holdout(ten, "p1") == holdout(ten, "p1")


# -- entry and re-entry ---------------------------------------------------------------------


def test_re_entry_after_its_time_only() -> None:
    events = [signup(), cart(START, event_id="c1"), cart(START + 2 * H, event_id="c2")]
    events.append(cart(START + 25 * H, event_id="c3"))
    sim = simulate(SHIPPED, events, until=START + 3 * D)
    entries = [e["entry_id"] for e in journey(sim, "abandoned_cart") if e["kind"] == "entered"]
    assert entries == ["c1", "c3"]  # c2 came while in it; c3 a day after c1


def test_never_means_once(tmp_path: Path) -> None:
    sim = simulate(SHIPPED, [signup(), identify(newsletter="unsubscribed", at=START, email=EMAIL)])
    sim.apply(identify(newsletter="subscribed", at=START + D, email=EMAIL))
    sim.run_until(START + 30 * D)
    entered = [e for e in journey(sim, "welcome") if e["kind"] == "entered"]
    assert len(entered) == 1


def test_a_replayed_entry_does_not_enter_again() -> None:
    rules = SHIPPED
    profile = process(None, PID, signup(), rules, START).profile
    first = process(profile, PID, placed(START, event_id="o1"), rules, START)
    book = Book.from_dict(first.profile.journey_flows)
    again = advance(
        rules.flows, book, first.profile, Occurrence(placed(START, event_id="o1"), (), "o1"), START
    )
    assert (again.sends, again.events) == ((), ())


# -- changed definitions --------------------------------------------------------------------


def test_changed_definitions_continue_where_the_step_exists_else_exit(tmp_path: Path) -> None:
    old = rules_for(tmp_path, _TWO_WAITS)
    sim = simulate(old, [signup(), placed(START)], until=START + 90 * 60_000)
    profile = sim.profiles[PID]
    assert Book.from_dict(profile.journey_flows).states["waits"].position == "3"

    same_step = rules_for(tmp_path, _TWO_WAITS.replace("send: b", "send: b2"))
    moved = recheck(profile, profile.wake_at or 0, same_step)
    assert [t.step for t in moved.triggers] == ["b2"]

    gone = rules_for(tmp_path, _TWO_WAITS.replace("      - wait: 2h\n", ""))
    left = recheck(profile, profile.wake_at or 0, gone)
    assert left.triggers == ()
    assert [(e.kind, e.reason) for e in left.journey_events] == [("exited", "definition_changed")]


_TWO_WAITS = """
journeys:
  - name: waits
    entry: {event: order.placed}
    consent: email_marketing
    steps:
      - wait: 1h
      - send: a
      - wait: 2h
      - send: b
"""


# -- properties -----------------------------------------------------------------------------

_ACTIONS = st.sampled_from(
    ["cart", "cart", "order", "unsubscribe", "subscribe", "revoke", "grant", "click", "birthday"]
)


def _event(action: str, at: int, n: int) -> Event:
    eid = f"x{n}"
    if action == "cart":
        return cart(at, product=f"p{n % 3}", event_id=eid)
    if action == "order":
        return placed(at, event_id=eid, order_id=f"o{n}")
    if action == "unsubscribe":
        return identify(newsletter="unsubscribed", at=at, email=EMAIL, event_id=eid)
    if action == "subscribe":
        return identify(newsletter="subscribed", at=at, email=EMAIL, event_id=eid)
    if action == "revoke":
        return identify(consent={"email_marketing": False}, at=at, email=EMAIL, event_id=eid)
    if action == "birthday":
        told = {"birthday": f"1990-{n % 12 + 1:02d}-15"}
        return identify(told, at=at, email=EMAIL, event_id=eid)
    if action == "grant":
        return identify(consent={"email_marketing": True}, at=at, email=EMAIL, event_id=eid)
    return email_event("clicked", "toys", at=at, email=EMAIL, event_id=eid)


_STREAMS = st.lists(
    st.tuples(_ACTIONS, st.integers(min_value=0, max_value=20 * D)), min_size=1, max_size=25
)


def _run(stream: list[tuple[str, int]]) -> Simulation:
    events = [signup()] + [_event(a, START + at, n) for n, (a, at) in enumerate(stream)]
    return simulate(SHIPPED, events, until=START + 40 * D)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STREAMS)
def test_no_send_without_consent_or_after_an_exit(stream: list[tuple[str, int]]) -> None:
    sim = _run(stream)
    for outcome in sim.outcomes:
        profile: Profile = outcome.profile
        for trigger in outcome.triggers:
            assert profile.consented("email_marketing"), trigger
            assert profile.newsletter == "subscribed", trigger
            assert not profile.email_counts["bounced"]
    exited: dict[tuple[str, str], int] = {}
    for e in sim.journey_events:
        key = (e["journey"], e["entry_id"])
        if e["kind"] == "exited":
            exited[key] = e["sequence"]
        elif e["kind"] == "step_sent":
            assert key not in exited, e
    sent_steps = [(s["journey"], s["cause_event_id"], s["step"]) for s in sim.sends]
    assert len(sent_steps) == len(set(sent_steps))  # each step of an entry once


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STREAMS)
def test_caps_are_never_exceeded_in_any_window(stream: list[tuple[str, int]]) -> None:
    sim = _run(stream)
    (cap,) = SHIPPED.policies.frequency_caps
    times = sorted(s["occurred_at"] for s in sim.sends)
    for i, t in enumerate(times):
        inside = [u for u in times[: i + 1] if u > t - cap.per_ms]
        assert len(inside) <= cap.max, times
    # Every send outside the quiet hours of the default zone.
    for t in times:
        hour = datetime.fromtimestamp(t / 1000, AMS).hour
        assert 8 <= hour < 21, t


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STREAMS, st.data())
def test_replay_changes_nothing(stream: list[tuple[str, int]], data: st.DataObject) -> None:
    """A replayed event is a duplicate; a timer run again on the profile it found (a crash
    before the write) gives the same outputs, and on the profile it left, none."""
    sim = _run(stream)
    again = _run(stream)
    assert sim.lines == again.lines
    replays = [signup()] + [_event(a, START + at, n) for n, (a, at) in enumerate(stream)]
    replay = data.draw(st.sampled_from(replays))
    assert process(sim.profiles[PID], PID, replay, SHIPPED, START + 41 * D).duplicate
    # Timers: replay each recorded wake on the profile before and after it.
    profile = process(None, PID, signup(), SHIPPED, START - H).profile
    profile = process(profile, PID, cart(START, event_id="k"), SHIPPED, START).profile
    due = profile.wake_at
    assert due is not None
    first = recheck(profile, due, SHIPPED)
    second = recheck(profile, due, SHIPPED)
    assert [t.to_record() for t in first.triggers] == [t.to_record() for t in second.triggers]
    assert [e.to_record() for e in first.journey_events] == [
        e.to_record() for e in second.journey_events
    ]
    assert recheck(first.profile, due, SHIPPED).duplicate


def test_a_timer_fires_due_steps_at_their_due_time_however_late() -> None:
    profile = process(None, PID, signup(), SHIPPED, START - H).profile
    profile = process(profile, PID, cart(START, event_id="k"), SHIPPED, START).profile
    book = Book.from_dict(profile.journey_flows)
    late = advance(SHIPPED.flows, book, profile, Timer(START + 5 * H), START + 5 * H)
    (sent,) = late.sends
    assert sent.occurred_at == START + H
    assert late.next_due == START + 24 * H  # the second wait counts from the first's end


def test_sequences_number_journey_events_per_profile() -> None:
    sim = simulate(SHIPPED, [signup(), cart(START), placed(START + 2 * H)], until=START + 20 * D)
    per_profile: dict[str, list[int]] = defaultdict(list)
    for line in sim.lines:
        if line.kind == "journey_event":
            per_profile[line.profile_id].append(line.record["sequence"])
    for numbers in per_profile.values():
        assert numbers == list(range(1, len(numbers) + 1))


# -- the journey-events topic -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_journey_events_round_trip_through_their_schema(fmt: OutputFormat) -> None:
    codec = Codec(Path(__file__).parents[2] / "schemas")
    # welcome_2 comes after three sends in the week: capped.
    sim = simulate(SHIPPED, [signup(), cart(START)], until=START + 4 * D)
    kinds = {e["kind"] for e in sim.journey_events}
    assert kinds == {"entered", "step_sent", "waiting", "exited", "suppressed"}
    for record in sim.journey_events:
        data = codec.encode_record("JourneyEvent", record, fmt)
        assert codec.decode_record("JourneyEvent", data) == record


def test_the_profile_step_sends_journey_events_keyed_by_profile_id() -> None:
    profile = process(None, PID, signup(), SHIPPED, START).profile
    step = profile_step(profile, PID, RoutedEvent(cart(START)), SHIPPED, START, partitions=8)
    events = [s for s in step.sends if s.topic is Out.JOURNEY_EVENTS]
    assert [(s.key, s.message.kind.value) for s in events] == [
        (PID, "entered"),
        (PID, "waiting"),
    ]
    assert isinstance(step.store, Profile)
    assert step.store.wake_at == START + H


def test_an_order_applied_before_an_earlier_cart_ends_the_journey_at_entry() -> None:
    # Different topics: the order (later) may be applied before the cart (earlier).
    sim = simulate(SHIPPED, [signup()])
    sim.apply(placed(START + 10 * 60_000))
    sim.apply(cart(START))
    sim.run_until(START + 3 * D)
    assert sends(sim, "abandoned_cart") == []
    kinds = [(e["kind"], e["reason"]) for e in journey(sim, "abandoned_cart")]
    assert kinds == [("entered", None), ("exited", "goal")]


def booking(at: int, starts: int, ends: int, order_id: str = "o-stay") -> Event:
    item = {"product_id": "cabin", "category": "stay", "quantity": 1, "unit_price": 500.0}
    body = {"order_id": order_id, "status": "placed", "total": 500.0, "currency": "EUR"}
    items = [item | {"starts_at": starts, "ends_at": ends}]
    return event(placed(at).kind, body | {"items": items}, at=at, email=EMAIL)


def test_nothing_promotional_during_a_stay(tmp_path: Path) -> None:
    # The shipped journeys without the weekly cap (welcome, post_purchase and pre_arrival
    # would fill it): the stay alone holds the reminder.
    shipped = Path(__file__).parents[2] / "streams" / "journeys" / "default_journeys.yaml"
    text = shipped.read_text().replace("    - {channel: email, max: 3, per: 7d}\n", "")
    uncapped = rules_for(tmp_path, text.replace("frequency_caps:\n", "frequency_caps: []\n"))
    starts, ends = local(6, 15), local(8, 10)
    sim = simulate(uncapped, [signup(), booking(START, starts, ends), cart(local(7, 12))])
    sim.run_until(ends + D)
    held = [e for e in journey(sim, "abandoned_cart") if e["kind"] == "suppressed"]
    assert (held[0]["reason"], held[0]["action"], held[0]["due_at"]) == ("stay", "deferred", ends)
    (reminder, *_) = sends(sim, "abandoned_cart")
    assert reminder["occurred_at"] == ends
    # Held longer than the reminder's expiry (1d): skipped, and the event says why.
    sim = simulate(uncapped, [signup(), booking(START, starts, local(9, 10)), cart(local(7, 12))])
    sim.run_until(local(10, 10))
    held = [e for e in journey(sim, "abandoned_cart") if e["kind"] == "suppressed"]
    assert [(e["reason"], e["action"]) for e in held][:2] == [
        ("stay", "deferred"),
        ("stay", "skipped"),
    ]
    # A cancelled booking is no stay.
    cancelled = order("cancelled", [], at=START + 1, email=EMAIL, order_id="o-stay")
    sim = simulate(
        uncapped, [signup(), booking(START, starts, ends), cancelled, cart(local(7, 12))]
    )
    sim.run_until(local(7, 13, 1))
    assert [s["occurred_at"] for s in sends(sim, "abandoned_cart")] == [local(7, 13)]


def test_a_stale_segment_recheck_does_not_hide_a_later_journey_step(tmp_path: Path) -> None:
    profile = process(None, PID, signup(), SHIPPED, START - H).profile
    profile = process(profile, PID, cart(START, event_id="k"), SHIPPED, START).profile
    stale = profile.clone()
    stale.segment_rules = "other definitions"
    stale.segment_recheck_at = START + 30 * 60_000  # before the reminder is due
    moved = recheck(stale, START + 30 * 60_000, SHIPPED)
    assert not moved.duplicate
    assert moved.profile.wake_at == START + H  # the worker's timer now waits for the step
    assert recheck(moved.profile, START + H, SHIPPED).triggers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STREAMS)
def test_skipping_events_that_cannot_move_a_journey_changes_no_output(
    stream: list[tuple[str, int]],
) -> None:
    """``concerns`` lets most events skip the engine; running it for every event instead
    must give the same sends and journey events."""
    skipping = _run(stream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(process_module, "concerns", lambda *args: True)
        always = _run(stream)
    assert always.lines == skipping.lines


def test_a_birthday_comes_every_year_at_nine_local_and_29_february_in_common_years() -> None:
    ny = ZoneInfo("America/New_York")
    leap_day = {"birthday": "1992-02-29", "timezone": "America/New_York"}
    sim = simulate(SHIPPED, [signup(traits=leap_day)])
    sim.run_until(int(datetime(2029, 1, 1, tzinfo=ny).timestamp() * 1000))
    birthdays = sends(sim, "birthday")
    assert [datetime.fromtimestamp(s["occurred_at"] / 1000, ny) for s in birthdays] == [
        datetime(year, 2, day, 9, tzinfo=ny)
        for year, day in ((2025, 28), (2026, 28), (2027, 28), (2028, 29))
    ]
    # One trigger id a year: a replay of a year's mail is dropped, the next year's is not.
    assert len({s["trigger_id"] for s in birthdays}) == 4
    # The journey goes back to its yearly wait instead of completing.
    waiting = [e for e in journey(sim, "birthday") if e["kind"] == "waiting"]
    assert waiting[-1]["due_at"] == int(datetime(2029, 2, 28, 9, tzinfo=ny).timestamp() * 1000)
    assert all(e["kind"] != "exited" for e in journey(sim, "birthday"))


def test_a_yearly_wait_with_an_offset_comes_that_long_before_the_date(tmp_path: Path) -> None:
    rules = rules_for(
        tmp_path,
        "journeys:\n"
        "  - name: before_birthday\n"
        "    entry: {segment_entered: newsletter_subscriber}\n"
        "    consent: email_marketing\n"
        "    steps:\n"
        "      - wait_until: {trait: birthday, each: year, time: '10:00', offset: -7d}\n"
        "      - send: soon\n",
    )
    sim = simulate(rules, [signup(traits={"birthday": "05-17"})])
    sim.run_until(int(datetime(2025, 6, 1, tzinfo=AMS).timestamp() * 1000))
    assert [s["occurred_at"] for s in sends(sim, "before_birthday")] == [
        # No quiet hours naming a default time zone: UTC.
        int(datetime(year, 5, 17, 10, tzinfo=ZoneInfo("UTC")).timestamp() * 1000) - 7 * D
        for year in (2024, 2025)
    ]
