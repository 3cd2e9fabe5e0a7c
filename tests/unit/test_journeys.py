"""Journey definitions and the pure decision of which journeys fire."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import Event, EventKind, SegmentChange
from streams.journeys.definitions import JourneyDefinition, TriggerKind, load_journeys
from streams.journeys.rules import JourneyTrigger, decide, ineligibility, record, trigger_id
from streams.profiles.model import Profile
from streams.rule_files import DefinitionError
from streams.segments.definitions import load_segments
from streams.segments.evaluator import diff
from tests.unit.test_reducer import T0, email_event, event, fold, identify, order, page_view

SEGMENTS = [s.name for s in load_segments(None)]
JOURNEYS = load_journeys(None, SEGMENTS)
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
    return decide(journeys, before, after, e, changes, e.event_id, e.occurred_at)


def test_defaults() -> None:
    assert [j.name for j in JOURNEYS] == ["welcome", "interest_inspiration", "post_purchase"]
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
        ("trigger: {event: order, segment_entered: customer}}", ["j_a", "'trigger'"]),
        ("trigger: {event: order}, payload: [shoe_size]}", ["j_a", "shoe_size"]),
        ("trigger: {event: order}, payload: [[a]]}", ["j_a", "'payload'"]),
        ("trigger: {event: order}, delay: 1h}", ["j_a", "not supported yet: delay"]),
        ("trigger: {event: order}, frequency_cap: 1}", ["j_a", "not supported yet"]),
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
