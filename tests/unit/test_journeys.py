"""Journey definitions (both forms, the shipped flows, errors) and one-step journeys run by
the flow engine as before flows: the decision of which journeys fire at an event."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import Event, EventKind, SegmentChange
from streams.journeys.definitions import (
    Branch,
    Flows,
    JourneyDefinition,
    Send,
    TriggerKind,
    Wait,
    WaitUntil,
    duration_ms,
    load_flows,
    load_journeys,
)
from streams.journeys.flow import Book, Occurrence, advance
from streams.journeys.rules import JourneyTrigger, ineligibility, record, trigger_id
from streams.profiles.model import Profile
from streams.rule_files import DefinitionError
from streams.segments.conditions import compile_condition
from streams.segments.definitions import load_segments
from streams.segments.evaluator import diff
from tests.unit.test_reducer import T0, email_event, event, fold, identify, order, page_view

SEGMENTS = [s.name for s in load_segments(None)]
ONE_STEP = Path(__file__).with_name("one_step_journeys.yaml")
JOURNEYS = load_journeys(ONE_STEP, SEGMENTS)
BY_NAME = {j.name: j for j in JOURNEYS}


def subscriber() -> Profile:
    return fold(
        [identify({"first_name": "Ann"}, "subscribed", {"email_marketing": True}, email="a@b.c")],
        Profile.new("p-1"),
    )


def entering(
    profile: Profile, *segments: str, cause: Event
) -> tuple[Profile, tuple[SegmentChange, ...]]:
    after = profile.clone()
    after.segments = tuple(sorted({*profile.segments, *segments}))
    changes = diff(
        profile.profile_id,
        profile.segments,
        after.segments,
        last_sequence=0,
        occurred_at=cause.occurred_at,
        cause_event_id=cause.event_id,
    )
    return after, changes


def run(
    journeys: Sequence[JourneyDefinition],
    before: Profile,
    after: Profile,
    e: Event,
    changes: Sequence[SegmentChange] = (),
) -> list[JourneyTrigger]:
    moved = advance(
        Flows(tuple(journeys)),
        Book.from_dict(after.journey_flows),
        after,
        Occurrence(e, changes, e.event_id),
        e.occurred_at,
        before=before,
        entered=after.journeys,
    )
    return list(moved.sends)


def test_one_step_journeys_are_one_send_flows() -> None:
    assert [j.name for j in JOURNEYS] == ["welcome", "interest_inspiration", "post_purchase"]
    assert BY_NAME["welcome"].steps == (
        Send("welcome_1", "welcome_1", ("first_name", "language", "interests", "recently_viewed")),
    )
    assert BY_NAME["welcome"].trigger.kind is TriggerKind.SEGMENT_ENTERED
    assert not BY_NAME["welcome"].repeat
    assert BY_NAME["post_purchase"].repeat


def test_welcome_fires_once_for_a_new_subscriber() -> None:
    cause = identify(newsletter="subscribed", at=T0 + 5, event_id="e-1")
    before = subscriber()
    after, changes = entering(before, "newsletter_subscriber", cause=cause)
    (trigger,) = run(JOURNEYS, before, after, cause, changes)
    assert trigger.to_record() == {
        "trigger_id": "86fcf298fd5a9d610994a6a33b7d52bd",
        "journey": "welcome",
        "step": "welcome_1",
        "profile_id": "p-1",
        "email": "a@b.c",
        "occurred_at": T0 + 5,
        "cause_event_id": "e-1",
        "payload": {"first_name": "Ann", "language": None, "interests": [], "recently_viewed": []},
    }
    after.journeys = record(after.journeys, [trigger])
    assert after.journeys == {"welcome": {"welcome_1": T0 + 5}}
    assert run(JOURNEYS, before, after, cause, changes) == []


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([identify(consent={"email_marketing": False}, at=T0 + 1)], "no_consent"),
        ([identify(newsletter="unsubscribed", at=T0 + 1)], "not_subscribed"),
        ([email_event("bounced")], "bounced_or_complained"),
        ([email_event("complained")], "bounced_or_complained"),
    ],
)
def test_ineligible_profiles_get_nothing(extra: list[Event], reason: str) -> None:
    before = fold(extra, subscriber())
    after, changes = entering(before, "newsletter_subscriber", cause=extra[0])
    assert ineligibility(BY_NAME["welcome"], after) == reason
    assert run(JOURNEYS, before, after, extra[0], changes) == []


def test_no_email_means_no_trigger() -> None:
    before = fold([identify(newsletter="subscribed", consent={"email_marketing": True})])
    assert ineligibility(BY_NAME["welcome"], before) == "no_email"


def test_interest_glob_names_the_interest() -> None:
    cause = email_event("clicked", "toys")
    before = subscriber()
    after, changes = entering(before, "interest_toys", "interest_baking", cause=cause)
    (trigger,) = run(JOURNEYS, before, after, cause, changes)
    assert trigger.journey == "interest_inspiration"
    assert trigger.payload["interest"] == "baking"  # the first entered by name
    assert trigger.payload["interests"] == ["baking", "toys"]


def test_exit_triggers_match_exits_only(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(
        "journeys:\n  - {name: bye, trigger: {segment_exited: customer}, step: s1,"
        " consent: email_marketing}\n"
    )
    journeys = load_journeys(path, SEGMENTS)
    cause = order("refunded")
    inside, entered = entering(subscriber(), "customer", cause=cause)
    assert run(journeys, subscriber(), inside, cause, entered) == []
    exited = diff("p-1", ["customer"], [], last_sequence=1, occurred_at=T0, cause_event_id="x")
    assert [t.journey for t in run(journeys, inside, subscriber(), cause, exited)] == ["bye"]


def test_post_purchase_repeats_per_order_and_excludes_what_was_bought() -> None:
    before = fold([order(items=[("old", "toys")], order_id="o-0")], subscriber())
    placed = order(items=[("pram", "toys"), ("doll", "toys")], order_id="o-1", event_id="e-9")
    after = fold([placed], before)
    (trigger,) = run(JOURNEYS, before, after, placed)
    assert trigger.journey == "post_purchase"
    assert trigger.payload["order_id"] == "o-1"
    assert trigger.payload["order_products"] == ["pram", "doll"]
    assert set(trigger.payload["products_purchased"]) == {"pram", "doll", "old"}
    after.journeys = record(after.journeys, [trigger])
    again = order(items=[("ball", "toys")], order_id="o-2", at=T0 + 9)
    (second,) = run(JOURNEYS, after, fold([again], after), again)
    assert second.trigger_id != trigger.trigger_id
    assert run(JOURNEYS, before, after, order("cancelled")) == []


def test_event_trigger_qualifiers() -> None:
    rule = BY_NAME["post_purchase"].trigger
    assert rule.matches_event(order("placed"))
    assert not rule.matches_event(order("refunded"))
    assert not rule.matches_event(page_view())
    assert not rule.matches_event(event(EventKind.EMAIL, {"action": "placed"}))


def test_record_does_not_touch_its_input() -> None:
    book = {"welcome": {"welcome_1": T0}}
    trigger = JourneyTrigger("id", "welcome", "welcome_1", "p", "a@b.c", T0 - 1, "e", {})
    updated = record(book, [trigger, trigger])
    assert book == {"welcome": {"welcome_1": T0}}
    assert updated == book  # the latest time is kept, an older replay does not move it back
    later = JourneyTrigger("id", "welcome", "welcome_2", "p", "a@b.c", T0 + 1, "e", {})
    assert record(book, [later]) == {"welcome": {"welcome_1": T0, "welcome_2": T0 + 1}}


@given(st.text(), st.text(), st.text(), st.text())
def test_trigger_ids_are_deterministic(j: str, s: str, p: str, e: str) -> None:
    first = trigger_id(j, s, p, e)
    assert first == trigger_id(j, s, p, e)
    assert len(first) == 32
    assert int(first, 16) >= 0


def test_trigger_id_is_stable_across_runs() -> None:
    # A literal, not a recomputation: a change of the scheme breaks consumers' dedup.
    assert trigger_id("welcome", "welcome_1", "p-1", "e-1") == "86fcf298fd5a9d610994a6a33b7d52bd"


# -- DefinitionError ----------------------------------------------------------------------

_BASE = "journeys:\n  - {name: j_a, step: s1, consent: email_marketing, "


@pytest.mark.parametrize(
    ("entry", "needles"),
    [
        ("trigger: {segment_entered: nope}}", ["j_a", "unknown segment 'nope'"]),
        ("trigger: {segment_exited: 'vip_*'}}", ["j_a", "unknown segment 'vip_*'"]),
        ("trigger: {event: purchase}}", ["j_a", "unknown event kind 'purchase'"]),
        ("trigger: {event: order.shipped}}", ["j_a", "qualifier 'shipped'"]),
        ("trigger: {sometime: x}}", ["j_a", "trigger must be one of"]),
        (
            "trigger: {event: order, segment_entered: customer}}",
            ["j_a", "trigger needs exactly one"],
        ),
        ("trigger: {event: order}, payload: [shoe_size]}", ["j_a", "shoe_size"]),
        ("trigger: {event: order}, payload: [[a]]}", ["j_a", "'payload'"]),
        ("trigger: {event: order}, delay: 1h}", ["j_a", "unknown field(s): delay"]),
        ("trigger: {event: order}, frequency_cap: 1}", ["j_a", "unknown field(s): frequency_cap"]),
        ("trigger: {event: order}, colour: red}", ["j_a", "unknown field(s): colour"]),
        ("trigger: {event: order}, repeat: often}", ["j_a", "'repeat'"]),
    ],
)
def test_definition_errors(tmp_path: Path, entry: str, needles: list[str]) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(_BASE + entry + "\n")
    with pytest.raises(DefinitionError) as info:
        load_journeys(path, SEGMENTS)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_consent_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text("journeys:\n  - {name: j_a, step: s1, trigger: {event: order}}\n")
    with pytest.raises(DefinitionError, match="j_a: missing field 'consent'"):
        load_journeys(path, SEGMENTS)


# -- flows: the shipped file --------------------------------------------------------------

FLOWS = load_flows(None, SEGMENTS, compile_condition)


def test_shipped_flows_cover_the_seeds_in_priority_order() -> None:
    assert [j.name for j in FLOWS.journeys] == [
        "post_purchase",
        "stay",
        "welcome",
        "abandoned_cart",
        "interest_inspiration",
        "win_back",
        "birthday",
    ]
    policies = FLOWS.policies
    assert [(c.channel, c.max, c.per_ms) for c in policies.frequency_caps] == [
        ("email", 3, 7 * 86_400_000)
    ]
    assert policies.quiet_hours is not None
    assert (policies.quiet_hours.start, policies.quiet_hours.end) == (21 * 60, 8 * 60)
    assert policies.quiet_hours.default_timezone == "Europe/Amsterdam"
    cart = FLOWS.by_name["abandoned_cart"]
    assert isinstance(cart.steps[0], Wait)
    assert cart.steps[0].ms == 3_600_000
    assert isinstance(cart.steps[1], Branch)
    assert [e.rule.pattern for e in cart.exit_on] == ["order.placed"]
    assert cart.exit_on[0].goal
    assert cart.re_entry_ms == 86_400_000
    welcome = FLOWS.by_name["welcome"]
    assert [s.template for s in welcome.steps if isinstance(s, Send)] == ["welcome_1", "welcome_2"]
    assert not welcome.repeat
    stay = FLOWS.by_name["stay"]
    first = stay.steps[0]
    assert isinstance(first, WaitUntil)
    assert (first.order_field, first.offset_ms) == ("stay_starts_at", -7 * 86_400_000)
    birthday = FLOWS.by_name["birthday"].steps[0]
    assert isinstance(birthday, WaitUntil)
    assert birthday.trait == "birthday"


def test_the_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(ISSUE_EXAMPLE)
    flows = load_flows(path, SEGMENTS, compile_condition)
    (cart,) = flows.journeys
    assert cart.holdout_percent == 10.0
    assert [i.key for i in cart.program] == [
        "1",
        "cart_reminder_1",
        "3",
        "4",
        "cart_reminder_2",
        "4.end",
        "5",
    ]
    assert flows.policies.priority[0] == "abandoned_cart"


ISSUE_EXAMPLE = """
policies:
  frequency_caps:
    - {channel: email, max: 3, per: 7d}
  quiet_hours: {from: "21:00", to: "08:00", timezone_trait: timezone,
                default_timezone: Europe/Amsterdam}
  priority: [abandoned_cart]
journeys:
  - name: abandoned_cart
    entry: {event: page-view.add_to_cart}
    consent: email_marketing
    transactional: false
    re_entry: {after: 1d}
    exit_on: [{event: order.placed}, {segment_exited: cart_abandoner}]
    holdout: 10%
    steps:
      - wait: 1h
      - send: cart_reminder_1
        payload: [first_name, cart_items]
      - wait: 23h
      - if: 'profile.cart.size > 0'
        then: [{send: cart_reminder_2, payload: [first_name, cart_items]}]
      - wait_until: {time: "10:00"}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30_000),
        ("15m", 900_000),
        ("12h", 43_200_000),
        ("90d", 7_776_000_000),
        ("-7d", -604_800_000),
        ("1.5h", None),
        ("7", None),
        ("d", None),
        (7, None),
    ],
)
def test_durations(text: object, expected: int | None) -> None:
    assert duration_ms(text) == expected


_FLOW = "journeys:\n  - name: j_a\n    entry: {event: order.placed}\n    consent: email_marketing\n"


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("    steps: []\n", ["j_a", "'steps'"]),
        ("    steps: [{wait: 1h}]\n", ["j_a", "no send step"]),
        ("    steps: [{wait: soon}, {send: a}]\n", ["j_a", "step 1", "wait needs a duration"]),
        ("    steps: [{wait: 0s}, {send: a}]\n", ["j_a", "step 1", "wait needs a duration"]),
        ("    steps: [{send: a}, {send: a}]\n", ["j_a", "send 'a' appears twice"]),
        ("    steps: [{send: a, payload: [shoe_size]}]\n", ["j_a", "step 1 (send a)", "shoe_size"]),
        ("    steps: [{send: a, channel: sms}]\n", ["j_a", "step 1 (send a)", "channel 'sms'"]),
        ("    steps: [{send: a, colour: red}]\n", ["j_a", "step 1 (send)", "colour"]),
        ("    steps: [{wait: 1h, send: a}]\n", ["j_a", "step 1", "exactly one of"]),
        (
            "    steps: [{if: 'profile.cart.size >', then: [{send: a}]}]\n",
            ["j_a", "step 1", "CEL syntax error"],
        ),
        (
            "    steps: [{if: 'profile.shoe_size > 1', then: [{send: a}]}]\n",
            ["j_a", "step 1", "unknown profile field(s): shoe_size"],
        ),
        (
            "    steps: [{if: 'profile.page_views', then: [{send: a}]}]\n",
            ["j_a", "step 1", "must be a bool"],
        ),
        ("    steps: [{if: 'true', then: []}]\n", ["j_a", "step 1", "'then'"]),
        (
            "    steps: [{send: a}, {if: 'true', then: [{wait: 1x}]}]\n",
            ["j_a", "step 2.then.1", "wait needs a duration"],
        ),
        ("    steps: [{wait_until: {time: '25:00'}}, {send: a}]\n", ["j_a", "step 1", "HH:MM"]),
        (
            "    steps: [{wait_until: {trait: birthday}}, {send: a}]\n",
            ["j_a", "step 1", "each: year"],
        ),
        (
            "    steps: [{wait_until: {order_field: shipped_at}}, {send: a}]\n",
            ["j_a", "step 1", "unknown order_field 'shipped_at'"],
        ),
        (
            "    steps: [{wait_until: {order_field: stay_starts_at, offset: soon}}, {send: a}]\n",
            ["j_a", "step 1", "offset needs a duration"],
        ),
        ("    steps: [{send: a}]\n    re_entry: sometimes\n", ["j_a", "re_entry"]),
        ("    steps: [{send: a}]\n    re_entry: {after: forever}\n", ["j_a", "re_entry"]),
        ("    steps: [{send: a}]\n    holdout: 10\n", ["j_a", "holdout", "percentage"]),
        ("    steps: [{send: a}]\n    holdout: 120%\n", ["j_a", "holdout"]),
        (
            "    steps: [{send: a}]\n    exit_on: [{event: order.shipped}]\n",
            ["j_a", "exit_on #1", "qualifier 'shipped'"],
        ),
        (
            "    steps: [{send: a}]\n    exit_on: [{segment_exited: nope}]\n",
            ["j_a", "exit_on #1", "unknown segment 'nope'"],
        ),
        (
            "    steps: [{send: a}]\n    exit_on: [{event: order, goal: yes please}]\n",
            ["j_a", "exit_on #1", "'goal'"],
        ),
        ("    steps: [{send: a}]\n    trigger: {event: order}\n", ["j_a", "unknown field(s)"]),
        (
            "    steps: [{send: a}]\n    backfill: true\n",
            ["j_a", "backfill: true needs a segment_entered entry"],
        ),
        (
            "    steps: [{send: a}]\npolicies: {priority: [nobody]}\n",
            ["policies", "unknown journey(s) ['nobody']"],
        ),
        (
            "    steps: [{send: a}]\n"
            "policies: {frequency_caps: [{channel: email, max: 0, per: 7d}]}\n",
            ["policies", "frequency_caps #1"],
        ),
        (
            "    steps: [{send: a}]\npolicies: {quiet_hours: {from: '21:00', to: '21:00'}}\n",
            ["policies", "quiet_hours"],
        ),
        (
            "    steps: [{send: a}]\npolicies: {quiet_hours: {from: '21:00', to: '08:00',"
            " default_timezone: Mars/Olympus}}\n",
            ["policies", "Mars/Olympus"],
        ),
        ("    steps: [{send: a}]\npolicies: {sometimes: 1}\n", ["policies", "sometimes"]),
        ("    steps: [{send: a}]\npolicies: [caps]\n", ["policies", "expected a mapping"]),
    ],
)
def test_flow_definition_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(_FLOW + body)
    with pytest.raises(DefinitionError) as info:
        load_flows(path, SEGMENTS, compile_condition)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_a_condition_needs_a_compiler(tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(_FLOW + "    steps: [{if: 'true', then: [{send: a}]}]\n")
    with pytest.raises(DefinitionError, match="step 1: conditions cannot be compiled here"):
        load_flows(path, SEGMENTS)
