"""Segment definitions (YAML + CEL) and evaluation."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import ENTERED, EXITED, Event
from streams.expressions import cel
from streams.profiles.model import Profile
from streams.rule_files import DefinitionError
from streams.segments.definitions import (
    SegmentDefinition,
    flattened,
    literal_keys,
    load_segments,
    referenced_paths,
)
from streams.segments.evaluator import diff, evaluate, fingerprint
from streams.segments.view import cel_view, ms_to_datetime
from streams.steps.process import Rules, process
from tests.unit.test_reducer import T0, email_event, fold, identify, order, page_view, unique_events

HOUR = 3_600_000
DAY = 24 * HOUR
DEFAULTS = load_segments(None)


def members(profile: Profile, now: int = T0) -> frozenset[str]:
    result = evaluate(DEFAULTS, profile, now)
    assert result.errors == {}
    return result.members


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "segments.yaml"
    path.write_text(text)
    return path


def one_segment(tmp_path: Path, when: str, extra: str = "") -> Path:
    return write(tmp_path, f"segments:\n  - name: seg_a\n    when: '{when}'\n{extra}")


def test_defaults_load_with_time_based_flags() -> None:
    assert [d.name for d in DEFAULTS] == [
        "newsletter_subscriber",
        "customer",
        "repeat_customer",
        "engaged_reader",
        "cart_abandoner",
        "interest_toys",
        "interest_baking",
        "interest_gifts",
    ]
    assert {d.name for d in DEFAULTS if d.time_based} == {"engaged_reader", "cart_abandoner"}


def test_empty_profile_is_in_no_segment() -> None:
    assert members(Profile.new("p")) == frozenset()


def test_subscriber_and_customers() -> None:
    p = fold([identify(newsletter="subscribed"), order()])
    assert members(p) == {"newsletter_subscriber", "customer"}
    p = fold([order(), identify(newsletter="unsubscribed", at=T0 + 1)], p)
    assert members(p) == {"customer", "repeat_customer"}


def test_engaged_reader_is_time_based() -> None:
    p = fold([email_event("opened", at=T0)])
    assert "engaged_reader" in members(p, T0 + 29 * DAY)
    assert "engaged_reader" not in members(p, T0 + 31 * DAY)
    p = fold([email_event("clicked", at=T0 + 20 * DAY)], p)
    assert "engaged_reader" in members(p, T0 + 31 * DAY)


def test_cart_abandoner() -> None:
    p = fold([page_view("toys", "p1", "add_to_cart", at=T0)])
    assert "cart_abandoner" not in members(p, T0 + HOUR // 2)
    assert "cart_abandoner" in members(p, T0 + 2 * HOUR)
    # An order after the add, even of other products, means the visitor did not abandon.
    ordered = fold([order(items=[("p2", None)], at=T0 + 10)], p)
    assert "cart_abandoner" not in members(ordered, T0 + 2 * HOUR)
    bought = fold([order(items=[("p1", None)], at=T0 - 10)], p)
    assert "cart_abandoner" in members(bought, T0 + 2 * HOUR)


@pytest.mark.parametrize("interest", ["toys", "baking", "gifts"])
def test_interest_from_views_or_email_clicks(interest: str) -> None:
    segment = f"interest_{interest}"
    two = fold([page_view(interest), page_view(interest), page_view("other")])
    assert segment not in members(two)
    assert segment in members(fold([page_view(interest)], two))
    assert segment in members(fold([email_event("clicked", interest)]))
    assert segment not in members(fold([email_event("opened", interest)]))


def test_runtime_error_is_non_membership_and_reported(tmp_path: Path) -> None:
    path = one_segment(
        tmp_path, 'size(profile.cart.items) == 0 || profile.views_by_category["toys"] > 0'
    )
    definitions = load_segments(path)
    assert evaluate(definitions, Profile.new("p"), T0).members == {"seg_a"}
    result = evaluate(definitions, fold([page_view("x", "p1", "add_to_cart")]), T0)
    assert result.members == frozenset()
    assert "seg_a" in result.errors
    assert "toys" in result.errors["seg_a"]


@settings(max_examples=100, deadline=None)
@given(unique_events(), st.integers(0, 40 * DAY), st.booleans())
def test_flattened_restricted_evaluation_agrees_with_the_expressions_on_the_full_view(
    events: list[Event], later: int, wide: bool
) -> None:
    definitions = wide_definitions() if wide else tuple(DEFAULTS)
    assert all(d.flat for d in definitions)
    p = fold(events)
    now = T0 + later
    context = {"profile": cel_view(p), "now": ms_to_datetime(now)}
    expected = {d.name for d in definitions if cel.compile(d.when).execute(context)}
    result = evaluate(definitions, p, now)
    assert result.errors == {}
    assert result.members == expected


@pytest.mark.parametrize(
    ("expression", "flattened_source", "paths"),
    [
        ('profile.newsletter == "x"', 'profile__newsletter == "x"', {"newsletter"}),
        (
            "profile.orders.count > 1 && profile . orders . revenue > 2.0",
            "profile__orders__count > 1 && profile__orders__revenue > 2.0",
            {"orders.count", "orders.revenue"},
        ),
        # A member of a map that is not a group stays a member of the variable.
        (
            'profile.views_by_category.toys > 1 || "profile.orders" == ""',
            'profile__views_by_category.toys > 1 || "profile.orders" == ""',
            {"views_by_category"},
        ),
        (
            'size(profile.email) > 0 && profile.orders["count"] > 0',
            'size(profile__email) > 0 && profile__orders["count"] > 0',
            {"email", "orders"},
        ),
        (
            "has(profile.views_by_category.toys)",
            "has(profile__views_by_category.toys)",
            {"views_by_category"},
        ),
        ("true", "true", set()),
    ],
)
def test_flattened(expression: str, flattened_source: str, paths: set[str]) -> None:
    flat = flattened(expression)
    assert flat is not None
    program, found = flat
    assert program.source == flattened_source
    assert found == paths


@pytest.mark.parametrize(
    "expression",
    [
        # `profile` read whole, or in ways a variable per path cannot stand for.
        'profile["orders"].count > 0',
        "size(profile) > 0",
        "has(profile.orders.count)",
        "[1].exists(profile, profile > 0)",
        # Quoting the rewrite does not follow.
        "'''it's profile.orders''' == \"\"",
    ],
)
def test_not_flattened(expression: str) -> None:
    assert flattened(expression) is None


MAPS = {"traits", "consent", "views_by_category", "email.clicked_categories"}


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        (
            '"toys" in profile__views_by_category && profile__views_by_category["toys"] >= 3'
            " || 'toys' in profile__email__clicked_categories",
            {"views_by_category": {"toys"}, "email.clicked_categories": {"toys"}},
        ),
        (
            'profile__traits.first_name == "Ann" && has(profile__consent.email_marketing)',
            {"traits": {"first_name"}, "consent": {"email_marketing"}},
        ),
        # A key read of a value of the map: the map itself is read by `b` alone.
        ('"a" in profile__traits.b', {"traits": {"b"}}),
        ('(x || "a" in profile__traits) ? 1 : 2', {"traits": {"a"}}),
        # The map read otherwise: as a whole, by a method, by a computed or tested key.
        ("size(profile__traits) > 1", {}),
        ("profile__traits.size() > 1", {}),
        ('profile__views_by_category.exists(k, k == "x")', {}),
        ('x + "a" in profile__traits', {}),
        ('r"a" in profile__traits', {}),
        ('profile__traits[k] == "a"', {}),
        ('profile__traits == {"a": "b"}', {}),
        ('"a" in profile__traits && size(profile__traits) > 1', {}),
    ],
)
def test_literal_keys(source: str, keys: dict[str, set[str]]) -> None:
    assert literal_keys(source, MAPS) == {path: frozenset(k) for path, k in keys.items()}


def test_an_interest_runs_again_only_when_its_own_category_changed() -> None:
    [toys] = [d for d in DEFAULTS if d.name == "interest_toys"]
    previous = fold([page_view("toys", event_id=f"view-{n}") for n in range(3)])
    previous.segments, previous.segment_rules = (), fingerprint([toys])
    # Recorded as a non-member although three toy views make it one: a rerun would add it.
    baking = fold([page_view("baking", event_id="view-baking")], previous)
    assert evaluate([toys], baking, T0, previous).members == frozenset()
    more_toys = fold([page_view("toys", event_id="view-toys")], previous)
    assert evaluate([toys], more_toys, T0, previous).members == {"interest_toys"}


def test_expressions_not_flattened_are_evaluated_over_the_profile_map(tmp_path: Path) -> None:
    text = (
        "segments:\n"
        "  - {name: whole, when: 'profile[\"orders\"].count >= 1'}\n"
        "  - {name: flat, when: 'profile.orders.count >= 1 && profile.page_views >= 0'}\n"
    )
    definitions = load_segments(write(tmp_path, text))
    assert [d.flat for d in definitions] == [False, True]
    assert evaluate(definitions, fold([order(items=[("p1", "toys")])]), T0).members == {
        "whole",
        "flat",
    }
    assert evaluate(definitions, Profile.new("p"), T0).members == frozenset()


# Expressions over every kind of path, so that incremental evaluation is checked on all.
WIDE_SEGMENTS = """
segments:
  - name: named
    when: '"first_name" in profile.traits && profile.has_email'
  - name: marketable
    when: '"email_marketing" in profile.consent && profile.consent["email_marketing"]'
  - name: browser
    when: 'profile.page_views >= 2 && size(profile.recently_viewed) > 0'
  - name: buyer
    when: 'profile.orders.revenue > 0.0 || size(profile.products_purchased) > 0'
  - name: carted
    when: 'size(profile.cart.items) > 0'
  - name: mailed
    when: 'profile.email.delivered + profile.email.opened > 1'
  - name: known
    when: 'size(profile.identities.user_ids) > 0'
  - name: empty
    when: 'profile.page_views == 0 && profile.orders.count == 0'
  - name: recent
    when: 'now - profile.last_seen < duration("1h")'
  - name: cat1_buyer
    when: '"cat1" in profile.categories_purchased && profile.categories_purchased.cat1 > 1'
  - name: browsing_wide
    when: 'size(profile.views_by_category) > 2'
  - name: cat2_or_wide
    when: '"cat2" in profile.views_by_category || size(profile.views_by_category) > 3'
  - name: cat3_reader
    when: >-
      "cat3" in profile.views_by_category && profile.views_by_category["cat3"] >= 2
      || "cat3" in profile.email.clicked_categories
"""


@functools.cache
def wide_definitions() -> tuple[SegmentDefinition, ...]:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "segments.yaml"
        path.write_text(WIDE_SEGMENTS)
        return tuple(load_segments(path))


def test_an_expression_whose_inputs_did_not_change_is_not_run_again(tmp_path: Path) -> None:
    definitions = load_segments(one_segment(tmp_path, "profile.orders.count >= 5"))
    previous = Profile.new("p")
    # Recorded as a member although the count says otherwise: a rerun would drop it.
    previous.segments, previous.segment_rules = ("seg_a",), fingerprint(definitions)
    viewed = previous.clone()
    viewed.page_views = 1
    assert evaluate(definitions, viewed, T0, previous=previous).members == {"seg_a"}
    ordered = previous.clone()
    ordered.orders_placed = 1
    assert evaluate(definitions, ordered, T0, previous=previous).members == frozenset()


def evaluated(definitions: Sequence[SegmentDefinition], profile: Profile, now: int) -> Profile:
    """``profile`` as the worker stores it after evaluating ``definitions`` at ``now``."""
    result = evaluate(definitions, profile, now)
    stored = profile.clone()
    stored.segments = tuple(sorted(result.members))
    stored.segment_rules = fingerprint(definitions)
    stored.segment_recheck_at = result.recheck_at
    return stored


def test_a_clock_expression_runs_again_once_the_clock_reaches_the_recheck_time(
    tmp_path: Path,
) -> None:
    path = one_segment(tmp_path, 'now - profile.last_seen > duration("1h")')
    definitions = load_segments(path)
    previous = evaluated(definitions, fold([page_view("toys", at=T0)]), T0)
    assert previous.segments == ()
    assert previous.segment_recheck_at == T0 + HOUR + 1
    unchanged = previous.clone()
    # Before the recheck time the stored result stands: recorded as a member although the
    # clock says otherwise, it stays one.
    member = previous.clone()
    member.segments = ("seg_a",)
    assert evaluate(definitions, unchanged, T0 + HOUR, member).members == {"seg_a"}
    # At it the expression runs again, and the clock has turned it.
    assert evaluate(definitions, unchanged, T0 + HOUR + 1, previous).members == {"seg_a"}
    # A change to what the expression reads runs it whatever the clock says.
    seen = previous.clone()
    seen.last_seen = T0 - 2 * HOUR
    assert evaluate(definitions, seen, T0 + 1, previous).members == {"seg_a"}


def test_the_recheck_time_is_the_first_instant_a_clock_term_flips() -> None:
    p = fold([email_event("opened", at=T0), page_view("toys", "p1", "add_to_cart", at=T0 + 5)])
    # The cart abandoner's `>= duration("1h")` turns at the hour.
    assert evaluate(DEFAULTS, p, T0 + 10).recheck_at == T0 + 5 + HOUR
    # Then nothing until the engaged reader's `< duration("720h")` turns.
    assert evaluate(DEFAULTS, p, T0 + 5 + HOUR).recheck_at == T0 + 30 * DAY
    assert evaluate(DEFAULTS, p, T0 + 2 * HOUR).recheck_at == T0 + 30 * DAY
    # Nothing left to flip: "never" is the epoch, whose edges are long past.
    assert evaluate(DEFAULTS, p, T0 + 31 * DAY).recheck_at is None
    assert evaluate(DEFAULTS, Profile.new("p"), T0).recheck_at is None


def test_a_clock_expression_in_another_form_runs_at_every_change(tmp_path: Path) -> None:
    path = one_segment(tmp_path, 'now > profile.last_seen + duration("1h")')
    definitions = load_segments(path)
    assert definitions[0].clock is None
    previous = evaluated(definitions, fold([page_view("toys", at=T0)]), T0)
    assert previous.segments == ()
    assert previous.segment_recheck_at is None
    assert evaluate(definitions, previous.clone(), T0 + DAY, previous).members == {"seg_a"}


# Every comparison, both signs, whole and odd durations, and a term under a negation.
CLOCK_SEGMENTS = """
segments:
  - {name: lt, when: 'now - profile.last_seen < duration("90m")'}
  - {name: le, when: 'now - profile.last_seen <= duration("1h30m")'}
  - {name: gt, when: 'now - profile.first_seen > duration("1500ms")'}
  - {name: ge, when: 'now - profile.first_seen >= duration("2h")'}
  - {name: ahead, when: 'now - profile.email.last_click_at < duration("-1m")'}
  - name: lapsed
    when: 'profile.page_views > 1 && !(now - profile.email.last_open_at <= duration("0.5h"))'
"""


@functools.cache
def clock_definitions() -> tuple[SegmentDefinition, ...]:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "segments.yaml"
        path.write_text(CLOCK_SEGMENTS)
        return (*load_segments(path), *DEFAULTS)


@settings(max_examples=150, deadline=None)
@given(unique_events(), st.integers(-3 * HOUR, 3 * HOUR), st.data())
def test_skipping_clock_expressions_until_the_recheck_time_changes_no_membership(
    events: list[Event], start: int, data: st.DataObject
) -> None:
    definitions = clock_definitions()
    assert all(d.clock for d in definitions if d.time_based)
    profile = fold(events)
    now = T0 + start
    stored = evaluated(definitions, profile, now)
    for _ in range(6):
        recheck = stored.segment_recheck_at
        # Anywhere ahead, and right at the recheck time's edges, where a mistake would show.
        edges = [] if recheck is None else [recheck - 1 - now, recheck - now, recheck + 1 - now]
        now += data.draw(st.one_of(st.integers(0, 2 * HOUR), st.sampled_from([0, *edges])))
        result = evaluate(definitions, stored.clone(), now, stored)
        full = evaluate(definitions, profile, now)
        assert result.members == full.members
        assert result.recheck_at == full.recheck_at
        stored = evaluated(definitions, profile, now)


def test_segments_evaluated_under_other_definitions_are_evaluated_in_full(tmp_path: Path) -> None:
    rules = Rules(tuple(load_segments(one_segment(tmp_path, "profile.orders.count >= 5"))), ())
    stored = Profile.new("p-1")
    # Recorded as a member by a release whose definitions differed: this one re-evaluates.
    stored.segments, stored.segment_rules = ("seg_a",), "definitions of another release"
    outcome = process(stored, "p-1", page_view("toys"), rules, T0)
    assert outcome.profile.segments == ()
    assert [(c.segment, c.change) for c in outcome.segment_changes] == [("seg_a", EXITED)]
    assert outcome.profile.segment_rules == rules.segment_fingerprint
    # Under the same definitions, an unrelated change keeps what was recorded.
    stored.segment_rules = rules.segment_fingerprint
    assert process(stored, "p-1", page_view("toys"), rules, T0).profile.segments == ("seg_a",)


def test_the_fingerprint_changes_with_any_definition(tmp_path: Path) -> None:
    def of(when: str) -> str:
        return fingerprint(load_segments(one_segment(tmp_path, when)))

    one, other = of("profile.orders.count >= 1"), of("profile.orders.count >= 2")
    assert len({one, other, fingerprint(DEFAULTS)}) == 3
    assert one == of("profile.orders.count >= 1")


@settings(max_examples=150, deadline=None)
@given(unique_events(pool=2), st.integers(0, 2 * HOUR))
def test_incremental_evaluation_gives_the_members_of_a_full_one(
    events: list[Event], step: int
) -> None:
    definitions = (*wide_definitions(), *DEFAULTS)
    rules = Rules(definitions, ())
    profile: Profile | None = None
    for number, event in enumerate(events):
        now = T0 + number * step
        profile = process(profile, "p-1", event, rules, now).profile
        assert set(profile.segments) == evaluate(definitions, profile, now).members


def test_members_combine() -> None:
    p = fold(
        [
            identify(newsletter="subscribed"),
            order(at=T0),
            order(at=T0),
            email_event("clicked", "toys"),
            page_view("baking", "p1", "add_to_cart", at=T0 + 1),
        ]
    )
    assert members(p, T0 + 2 * HOUR) == {
        "newsletter_subscriber",
        "customer",
        "repeat_customer",
        "interest_toys",
        "cart_abandoner",
        "engaged_reader",
    }


@settings(max_examples=100, deadline=None)
@given(unique_events())
def test_evaluation_never_errors_on_default_segments(events: list[Event]) -> None:
    evaluate_ok = evaluate(DEFAULTS, fold(events), T0)
    assert evaluate_ok.errors == {}


@pytest.mark.parametrize(
    ("expression", "paths"),
    [
        ('profile.newsletter == "x"', {"newsletter"}),
        (
            "profile.orders.count > 1 && profile.orders.revenue > 2.0",
            {"orders.count", "orders.revenue"},
        ),
        ('profile.views_by_category.toys > 1 || "profile.nope" == ""', {"views_by_category"}),
        ("size(profile.email) > 0 && profile.email.opened > 0", {"email"}),
        ("profile.email.nope > 0", {"email.nope"}),
        ('profile["orders"].count > 0', None),
    ],
)
def test_referenced_paths(expression: str, paths: set[str] | None) -> None:
    found = referenced_paths(expression)
    if paths is None:
        assert {"orders", "email", "newsletter"} <= found
    else:
        assert found == paths


def test_diff_orders_exits_before_entries_and_numbers_from_last() -> None:
    changes = diff(
        "p", ["b", "c"], ["a", "c", "d"], last_sequence=7, occurred_at=T0, cause_event_id="e"
    )
    assert [(c.segment, c.change, c.sequence) for c in changes] == [
        ("b", EXITED, 8),
        ("a", ENTERED, 9),
        ("d", ENTERED, 10),
    ]
    assert changes[0].to_record() == {
        "profile_id": "p",
        "segment": "b",
        "change": "exited",
        "sequence": 8,
        "occurred_at": T0,
        "cause_event_id": "e",
    }


# -- DefinitionError ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("segments: [\n", ["invalid YAML"]),
        ("other: []\n", ["list under 'segments'"]),
        ("segments:\n  - when: 'true'\n", ["entry #1", "'name'"]),
        ("segments:\n  - name: seg_a\n", ["seg_a", "missing field 'when'"]),
        (
            "segments:\n  - {name: seg_a, when: 'true'}\n  - {name: seg_a, when: 'false'}\n",
            ["seg_a", "duplicate name"],
        ),
        ("segments:\n  - {name: seg_a, when: 'true', colour: red}\n", ["seg_a", "colour"]),
        (
            "segments:\n  - {name: seg_a, when: 'profile.orders.count >'}\n",
            ["seg_a", "CEL syntax error"],
        ),
        (
            "segments:\n  - {name: seg_a, when: 'profile.orders.count'}\n",
            ["seg_a", "must be a bool, got int"],
        ),
        (
            "segments:\n  - {name: seg_a, when: 'profile.ordres.count > 1'}\n",
            ["seg_a", "unknown profile field(s): ordres"],
        ),
        (
            "segments:\n  - {name: seg_a, when: 'profile.views_by_category[\"toys\"] > 1'}\n",
            ["seg_a", "fails on an empty profile", "toys"],
        ),
        (
            "segments:\n  - {name: seg_a, when: 'now > profile.last_seen', time_based: false}\n",
            ["seg_a", "uses 'now' but time_based is false"],
        ),
        (
            "segments:\n  - {name: seg_a, when: 'true', time_based: 'yes'}\n",
            ["seg_a", "time_based"],
        ),
    ],
)
def test_definition_errors_name_file_segment_and_error(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DefinitionError) as info:
        load_segments(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_segments(tmp_path / "absent.yaml")


def test_time_based_is_derived_when_omitted(tmp_path: Path) -> None:
    (definition,) = load_segments(one_segment(tmp_path, "now > profile.last_seen"))
    assert isinstance(definition, SegmentDefinition)
    assert definition.time_based
    assert definition.paths == {"last_seen"}


def test_a_segment_needing_a_purpose_is_left_in_the_event_that_revokes_it(tmp_path: Path) -> None:
    extra = "    consent: ads\n"
    definitions = tuple(load_segments(one_segment(tmp_path, "profile.page_views > 0", extra)))
    assert definitions[0].consent == "ads"
    plain = tuple(load_segments(one_segment(tmp_path, "profile.page_views > 0")))
    assert fingerprint(definitions) != fingerprint(plain)
    rules = Rules(definitions, ())
    viewed = process(None, "p-1", page_view("toys"), rules, T0)
    assert viewed.profile.segments == ()  # no consent stated: no member
    granted = process(viewed.profile, "p-1", identify(consent={"ads": True}, at=T0 + 1), rules, T0)
    assert [(c.segment, c.change) for c in granted.segment_changes] == [("seg_a", ENTERED)]
    revoked = identify(consent={"ads": False}, at=T0 + 2)
    outcome = process(granted.profile, "p-1", revoked, rules, T0)
    assert [(c.segment, c.change, c.cause_event_id) for c in outcome.segment_changes] == [
        ("seg_a", EXITED, revoked.event_id)
    ]
    # Later events do not bring the person back without a new grant.
    later = process(outcome.profile, "p-1", page_view("toys", at=T0 + 3), rules, T0)
    assert later.segment_changes == ()


def test_a_consent_field_must_name_a_purpose(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="consent"):
        load_segments(one_segment(tmp_path, "true", "    consent: ''\n"))
