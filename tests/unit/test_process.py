"""process(): the whole pure pipeline for one event."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, IdentifierKind
from streams.identity.identifiers import merge_marker, merged_into
from streams.profiles.model import Forward, Profile, event_fingerprint
from streams.steps.process import (
    Outcome,
    Rules,
    backfill,
    backfill_cause,
    process,
    recheck,
    recheck_cause,
)
from streams.steps.profile import Backfill, ProfileStep, Recheck, profile_step
from tests.unit.test_reducer import T0, email_event, identify, order, page_view, unique_events

# The one-step journeys, whose sends go at once: what these tests are about. The shipped
# flows are tested in test_flow.py.
ONE_STEP = Path(__file__).with_name("one_step_journeys.yaml")
RULES = Rules.load(None, ONE_STEP)
NOW = T0 + 1_000


def run(
    events: list[Event], profile: Profile | None = None
) -> tuple[Profile | None, list[Outcome]]:
    outcomes = []
    for e in events:
        outcome = process(profile, "p-1", e, RULES, NOW)
        profile = outcome.profile
        outcomes.append(outcome)
    return profile, outcomes


def records(outcomes: list[Outcome]) -> list[dict[str, object]]:
    return [
        record
        for o in outcomes
        for record in [c.to_record() for c in o.segment_changes]
        + [t.to_record() for t in o.triggers]
    ]


def test_subscriber_flow() -> None:
    signup = identify(
        {"first_name": "Ann"},
        "subscribed",
        {"email_marketing": True},
        email="a@b.c",
        event_id="e-1",
        at=T0 + 5,
    )
    profile, (outcome,) = run([signup])
    assert not outcome.duplicate
    assert [c.to_record() for c in outcome.segment_changes] == [
        {
            "profile_id": "p-1",
            "segment": "newsletter_subscriber",
            "change": "entered",
            "sequence": 1,
            "occurred_at": T0 + 5,
            "cause_event_id": "e-1",
        }
    ]
    (trigger,) = outcome.triggers
    assert set(trigger.to_record()) == {
        "trigger_id",
        "journey",
        "step",
        "profile_id",
        "email",
        "occurred_at",
        "cause_event_id",
        "payload",
    }
    assert (trigger.journey, trigger.occurred_at) == ("welcome", T0 + 5)
    assert profile is not None
    assert profile.segments == ("newsletter_subscriber",)
    assert profile.segment_sequence == 1
    assert profile.journeys == {"welcome": {"welcome_1": T0 + 5}}

    # Unsubscribe and subscribe again: segment changes continue, welcome does not repeat.
    profile, outcomes = run(
        [email_event("unsubscribed", at=T0 + 6), identify(newsletter="subscribed", at=T0 + 7)],
        profile,
    )
    assert [(c.change, c.sequence) for o in outcomes for c in o.segment_changes] == [
        ("exited", 2),
        ("entered", 3),
    ]
    assert [t for o in outcomes for t in o.triggers] == []


def test_duplicate_has_no_outputs_and_keeps_the_profile() -> None:
    e = order(items=[("p1", "toys")])
    profile, _ = run([identify(newsletter="subscribed", email="a@b.c"), e])
    outcome = process(profile, "p-1", e, RULES, NOW)
    assert outcome.duplicate
    assert outcome.profile is profile
    assert outcome.segment_changes == ()
    assert outcome.triggers == ()


def test_time_based_segments_use_now_but_outputs_use_event_time() -> None:
    e = page_view("toys", "p1", "add_to_cart", at=T0, event_id="cart")
    later = process(None, "p-1", e, RULES, T0 + 2 * 3_600_000)
    assert [c.segment for c in later.segment_changes] == ["cart_abandoner"]
    assert later.segment_changes[0].occurred_at == T0
    assert process(None, "p-1", e, RULES, T0 + 60_000).segment_changes == ()


def test_evaluation_errors_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "segments:\n  - name: fragile\n"
        "    when: 'profile.page_views == 0 || profile.views_by_category[\"toys\"] > 0'\n"
    )
    journeys = tmp_path / "j.yaml"
    journeys.write_text("journeys: []\n")
    rules = Rules.load(path, journeys, recent_ids=32)
    assert rules.recent_ids == 32
    outcome = process(None, "p-1", page_view("garden"), rules, NOW)
    assert "fragile" in outcome.evaluation_errors
    assert outcome.profile.segments == ()


def test_profile_id_mismatch_is_a_bug() -> None:
    with pytest.raises(ValueError, match="p-2"):
        process(Profile.new("p-1"), "p-2", page_view(), RULES, NOW)


@settings(max_examples=100, deadline=None)
@given(unique_events(pool=2), st.data())
def test_replays_change_nothing_and_reproduce_outputs(
    events: list[Event], data: st.DataObject
) -> None:
    clean_profile, clean = run(events)
    replayed = list(events)
    for e in data.draw(st.lists(st.sampled_from(events), max_size=8) if events else st.just([])):
        replayed.insert(data.draw(st.integers(replayed.index(e) + 1, len(replayed))), e)
    profile, outcomes = run(replayed)
    assert profile == clean_profile
    assert records(outcomes) == records(clean)
    assert sum(o.duplicate for o in outcomes) == len(replayed) - len(events)
    # A second run from scratch gives identical records: nothing depends on the wall clock.
    assert records(run(events)[1]) == records(clean)


@settings(max_examples=100, deadline=None)
@given(unique_events(pool=2))
def test_segment_sequences_increase_by_one(events: list[Event]) -> None:
    profile, outcomes = run(events)
    sequences = [c.sequence for o in outcomes for c in o.segment_changes]
    assert sequences == list(range(1, len(sequences) + 1))
    if profile is not None:
        assert profile.segment_sequence == len(sequences)


def test_events_are_remembered_by_an_eleven_character_fingerprint() -> None:
    event_id = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
    fingerprint = event_fingerprint(event_id)
    assert len(fingerprint) == 11
    assert fingerprint == event_fingerprint(event_id)
    assert fingerprint != event_fingerprint(event_id[:-1] + "c")
    profile = process(None, "p_1", page_view(event_id=event_id), RULES, NOW).profile
    assert list(profile.recent_event_ids) == [fingerprint]


def test_a_profile_stored_with_full_event_ids_still_recognises_their_replays() -> None:
    """Profiles stored before schema 2 remembered full event ids."""
    seen = page_view(event_id="e-before-upgrade")
    stored = process(None, "p_1", seen, RULES, NOW).profile.to_dict()
    stored["schema"] = 1
    stored["recent_event_ids"] = ["e-before-upgrade", merge_marker("p_other")]

    upgraded = Profile.from_dict(stored)

    assert process(upgraded, "p_1", seen, RULES, NOW).duplicate
    assert merged_into(upgraded) == ["p_other"]


def test_segments_stored_before_recheck_times_are_evaluated_in_full_at_the_next_change() -> None:
    """Profiles stored before schema 3 have no segment_recheck_at to trust their segments by."""
    e = page_view("toys", "p1", "add_to_cart", at=NOW, event_id="cart")
    stored = process(None, "p_1", e, RULES, NOW).profile.to_dict()
    stored["schema"] = 2
    del stored["segment_recheck_at"]
    # Not what a full evaluation gives: kept only if the stored segments were trusted.
    stored["segments"] = ["customer"]

    upgraded = Profile.from_dict(stored)
    later = process(upgraded, "p_1", page_view("toys"), RULES, NOW + 60_000)

    assert upgraded.segment_rules == ""
    assert [(c.segment, c.change) for c in later.segment_changes] == [("customer", "exited")]
    # The cart abandoner's `now - last add >= 1h` turns true at the hour.
    assert later.profile.segment_recheck_at == NOW + 3_600_000


def rules_of(tmp_path: Path, segments: str) -> Rules:
    path, journeys = tmp_path / "s.yaml", tmp_path / "j.yaml"
    path.write_text(f"segments:\n{segments}")
    journeys.write_text("journeys: []\n")
    return Rules.load(path, journeys)


def test_a_new_profile_enters_the_segments_an_empty_profile_is_in(tmp_path: Path) -> None:
    """Its first event is evaluated against an empty profile's segments, but it enters them."""
    rules = rules_of(tmp_path, "  - {name: prospect, when: 'profile.orders.count == 0'}\n")
    outcome = process(None, "p-1", page_view("toys"), rules, NOW)
    assert [(c.segment, c.change) for c in outcome.segment_changes] == [("prospect", "entered")]
    assert outcome.profile.segments == ("prospect",)


def test_the_blank_is_evaluated_again_once_the_clock_passes_an_edge_of_it(tmp_path: Path) -> None:
    # An empty profile's last order is the epoch: this flips for it an hour after NOW.
    after = NOW + 3_600_000
    rules = rules_of(
        tmp_path,
        f"  - {{name: late, when: 'now - profile.last_order_at >= duration(\"{after}ms\")'}}\n",
    )
    assert process(None, "p-1", page_view("toys"), rules, NOW).profile.segments == ()
    assert process(None, "p-2", page_view("toys"), rules, after).profile.segments == ("late",)


CART_REMINDER = """
journeys:
  - name: cart_reminder
    trigger: {segment_entered: cart_abandoner}
    step: reminder_1
    consent: email_marketing
"""


def abandoned_cart(rules: Rules) -> Profile:
    signup = identify(None, "subscribed", {"email_marketing": True}, email="a@b.c", at=NOW)
    profile = process(None, "p-1", signup, rules, NOW).profile
    cart = page_view("toys", "p1", "add_to_cart", at=NOW)
    return process(profile, "p-1", cart, rules, NOW).profile


def test_a_recheck_enters_the_segment_at_the_instant_the_clock_flips_it(tmp_path: Path) -> None:
    journeys = tmp_path / "j.yaml"
    journeys.write_text(CART_REMINDER)
    rules = Rules.load(None, journeys)
    profile = abandoned_cart(rules)
    edge = NOW + 3_600_000
    # `now - last add >= 1h` turns true at the hour: one recheck, then.
    assert profile.segment_recheck_at == edge

    after = recheck(profile, edge, rules)
    assert [c.to_record() for c in after.segment_changes] == [
        {
            "profile_id": "p-1",
            "segment": "cart_abandoner",
            "change": "entered",
            "sequence": profile.segment_sequence + 1,
            "occurred_at": edge,
            "cause_event_id": recheck_cause(edge),
        }
    ]
    assert [t.journey for t in after.triggers] == ["cart_reminder"]
    assert after.profile.segment_recheck_at is None
    # Run again on the same stored profile (a crash before it was written): the same outputs.
    assert records([recheck(profile, edge, rules)]) == records([after])


def test_a_recheck_no_longer_the_profiles_own_changes_nothing(tmp_path: Path) -> None:
    profile = abandoned_cart(RULES)
    at = profile.segment_recheck_at
    assert at is not None
    # An event evaluated the profile since: its recheck time moved on.
    assert recheck(profile, at - 1, RULES).duplicate
    other = rules_of(tmp_path, "  - {name: prospect, when: 'profile.orders.count == 0'}\n")
    assert recheck(profile, at, other).duplicate
    assert not recheck(profile, at, RULES).duplicate


def test_rechecks_at_each_recheck_time_agree_with_an_event_evaluated_later() -> None:
    """A profile left alone ends, rechecked along the way, where its next event would find it."""
    profile = abandoned_cart(RULES)
    later = NOW + 40 * 86_400_000
    left_alone = profile
    while (at := left_alone.segment_recheck_at) is not None and at <= later:
        left_alone = recheck(left_alone, at, RULES).profile
    woken = process(profile, "p-1", page_view(None, at=later), RULES, later).profile
    assert left_alone.segments == woken.segments


def test_a_recheck_of_a_profile_merged_away_or_gone_does_nothing() -> None:
    forward = Forward("p-2", IdentifierKind.EMAIL)
    for stored in (forward, None):
        assert profile_step(stored, "p-1", Recheck(NOW), RULES, NOW, partitions=8) == ProfileStep()


def test_an_event_after_a_recheck_time_finds_the_profile_as_the_recheck_left_it() -> None:
    """Whether the worker's recheck or the next event comes first, the clock's changes are
    the recheck's: same cause, same time, same sequence."""
    profile = abandoned_cart(RULES)
    edge = NOW + 3_600_000
    view = page_view("toys", at=edge + 60_000, event_id="late-view")
    woken = process(profile, "p-1", view, RULES, edge + 60_000)
    rechecked = recheck(profile, edge, RULES)
    then_viewed = process(rechecked.profile, "p-1", view, RULES, edge + 60_000)
    assert [(c.segment, c.cause_event_id) for c in woken.segment_changes] == [
        ("cart_abandoner", recheck_cause(edge))
    ]
    assert records([woken]) == records([rechecked, then_viewed])
    assert woken.profile.to_dict() == then_viewed.profile.to_dict()


@st.composite
def timed_activity(draw: st.DrawFn) -> list[tuple[Event, int]]:
    """Events of one shopper with gaps of up to two days between them, and when each is
    handled (up to an hour after it occurred)."""
    at = T0
    timed = []
    for n in range(draw(st.integers(1, 12))):
        at += draw(st.integers(0, 2 * 86_400_000))
        kind = draw(st.sampled_from(["cart", "order", "open", "click", "view"]))
        event_id = f"e-{n}"
        made = {
            "cart": page_view("toys", "p1", "add_to_cart", at=at, event_id=event_id),
            "order": order(items=[("p1", "toys")], at=at, event_id=event_id),
            "open": email_event("opened", at=at, event_id=event_id),
            "click": email_event("clicked", "toys", at=at, event_id=event_id),
            "view": page_view("baking", at=at, event_id=event_id),
        }[kind]
        timed.append((made, at + draw(st.integers(0, 3_600_000))))
    return timed


@settings(max_examples=150, deadline=None)
@given(timed_activity())
def test_rechecks_in_between_or_not_the_outputs_are_the_same(
    timed: list[tuple[Event, int]],
) -> None:
    """A worker that runs every recheck on time and one that runs none (every event catches
    up) emit the same changes and triggers and end with the same profile. On time: once the
    input before it is applied, so an event read late still goes before the rechecks that came
    due after it happened."""
    signup = identify(None, "subscribed", {"email_marketing": True}, email="a@b.c", at=T0)
    start = process(None, "p-1", signup, RULES, T0).profile
    lazy, eager = start, start
    lazy_outcomes: list[Outcome] = []
    eager_outcomes: list[Outcome] = []
    for event, handled_at in timed:
        while (at := eager.segment_recheck_at) is not None and at <= min(
            handled_at, event.occurred_at
        ):
            outcome = recheck(eager, at, RULES)
            eager_outcomes.append(outcome)
            eager = outcome.profile
        for outcomes, profile in ((lazy_outcomes, lazy), (eager_outcomes, eager)):
            outcomes.append(process(profile, "p-1", event, RULES, handled_at))
        lazy, eager = lazy_outcomes[-1].profile, eager_outcomes[-1].profile
    assert records(lazy_outcomes) == records(eager_outcomes)
    assert lazy.to_dict() == eager.to_dict()


BUYER = "  - {name: buyer, when: 'profile.orders.count > 0'}\n"
WELCOME = (
    "journeys:\n"
    "  - name: thanks\n"
    "    entry: {segment_entered: big_spender}\n"
    "    consent: email_marketing\n"
    "    backfill: true\n"
    "    steps: [{send: thanks_1}]\n"
)


def test_a_profile_stored_under_other_definitions_is_backfilled_without_an_event(
    tmp_path: Path,
) -> None:
    """The background evaluation: a new segment's current members enter it, with cause
    backfill:<definitions hash>, and a new backfill journey enters them; once only."""
    old = rules_of(tmp_path, BUYER)
    customer = identify(None, "subscribed", {"email_marketing": True}, email="a@b.c")
    stored = process(None, "p-1", customer, old, NOW).profile
    stored = process(stored, "p-1", order("placed", total=500.0, at=T0 + 1), old, NOW).profile
    assert stored.segments == ("buyer",)
    (tmp_path / "s.yaml").write_text(
        f"segments:\n{BUYER}  - {{name: big_spender, when: 'profile.orders.revenue >= 100.0'}}\n"
    )
    (tmp_path / "j.yaml").write_text(WELCOME)
    new = Rules.load(tmp_path / "s.yaml", tmp_path / "j.yaml")
    outcome = profile_step(stored, stored.profile_id, Backfill(), new, NOW, partitions=8).outcome
    assert outcome is not None
    cause = backfill_cause(new)
    assert cause == f"backfill:{new.segment_fingerprint}"
    changes = [(c.segment, c.change, c.cause_event_id) for c in outcome.segment_changes]
    assert changes == [("big_spender", "entered", cause)]
    assert [(t.journey, t.cause_event_id) for t in outcome.triggers] == [("thanks", cause)]
    assert backfill(outcome.profile, new, NOW + 1).duplicate
    # Without the background evaluation the next event does it, with the same trigger id.
    later = process(stored, stored.profile_id, page_view("toys", at=T0 + 2), new, NOW)
    assert [(c.segment, c.change, c.cause_event_id) for c in later.segment_changes] == changes
    assert [t.trigger_id for t in later.triggers] == [t.trigger_id for t in outcome.triggers]
    # Without backfill: true only future entries enter.
    (tmp_path / "j.yaml").write_text(WELCOME.replace("backfill: true", "backfill: false"))
    future_only = Rules.load(tmp_path / "s.yaml", tmp_path / "j.yaml")
    outcome = backfill(stored, future_only, NOW)
    assert [c.segment for c in outcome.segment_changes] == ["big_spender"]
    assert outcome.triggers == ()
