"""Where the clock enters a segment expression (streams.segments.clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.segments.clock import ClockTerm, clock_terms
from streams.segments.definitions import load_segments
from streams.segments.evaluator import evaluate
from tests.unit.test_reducer import T0, fold, page_view

HOUR = 3_600_000


@pytest.mark.parametrize(
    ("expression", "terms"),
    [
        ('now - profile.last_seen < duration("1h")', [("last_seen", HOUR, 0)]),
        (
            'profile.cart.size > 0 && now - profile . cart . last_added_at >= duration("1h30m")',
            [("last_add_to_cart_at", 90 * 60_000, 0)],
        ),
        (
            '(now - profile.email.last_open_at <= duration("720h")) == true'
            ' || !(now - profile.email.last_click_at > duration("0.5s"))',
            [("last_open_at", 720 * HOUR, 1), ("last_click_at", 500, 1)],
        ),
        (
            'now - profile.first_order_at < duration("-2m") ? true : false',
            [("first_order_at", -120_000, 0)],
        ),
        ('now - profile.popup_shown_at > duration("1500ms")', [("popup_shown_at", 1500, 1)]),
        ('now - profile.last_seen < duration("2000000ns")', [("last_seen", 2, 0)]),
        # No `now` outside string literals: the clock cannot change the result.
        ('profile.newsletter == "now - profile.last_seen < duration(\\"1h\\")"', []),
        ("profile.orders.count >= 1", []),
        ("x.now > 1", []),
    ],
)
def test_clock_terms(expression: str, terms: list[tuple[str, int, int]]) -> None:
    assert clock_terms(expression) == tuple(ClockTerm(a, d, (lag,)) for a, d, lag in terms)


@pytest.mark.parametrize(
    "expression",
    [
        # `now` on its own, or on the other side.
        'now > timestamp("2027-01-01T00:00:00Z")',
        'duration("1h") > now - profile.last_seen',
        # An operand of something that binds tighter than the comparison.
        'now - profile.last_seen < duration("1h") + duration("1m")',
        'now - profile.last_seen - duration("1m") < duration("1h")',
        'timestamp("2027-01-01T00:00:00Z") - now - profile.last_seen < duration("1h")',
        'true == now - profile.last_seen < duration("1h")',
        'now - profile.last_seen < duration("1h").getSeconds()',
        '(now - profile.last_seen) < duration("1h")',
        # Not a timestamp, not a literal, not whole milliseconds, not a duration at all.
        'now - profile.page_views < duration("1h")',
        'now - profile.last_seen < duration(profile.traits["wait"])',
        'now - profile.last_seen < duration("1.5ms")',
        'now - profile.last_seen < duration("1 h")',
        'now - profile.last_seen < duration("h")',
        # One term understood does not vouch for another use.
        'now - profile.last_seen < duration("1h") && now.getHours() > 8',
        '[1].exists(now, now > 0) || now - profile.last_seen < duration("1h")',
    ],
)
def test_other_uses_of_now_are_not_analysed(expression: str) -> None:
    assert clock_terms(expression) is None


@pytest.mark.parametrize("operator", ["<", "<=", ">", ">="])
@pytest.mark.parametrize(
    "form",
    ['now - profile.last_seen {op} duration("1h")', 'profile.last_seen - now {op} duration("-1h")'],
)
def test_a_segment_is_rechecked_at_the_instant_its_result_flips(
    tmp_path: Path, operator: str, form: str
) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(f"segments:\n  - name: s\n    when: '{form.format(op=operator)}'\n")
    definitions = load_segments(path)
    seen = fold([page_view("toys")])
    at = evaluate(definitions, seen, T0).recheck_at
    assert at is not None
    assert T0 + HOUR <= at <= T0 + HOUR + 1
    # Once per flip: the result differs on either side of the recheck and at it stays.
    assert evaluate(definitions, seen, at - 1).members != evaluate(definitions, seen, at).members
    assert evaluate(definitions, seen, at).members == evaluate(definitions, seen, at + 1).members
    assert evaluate(definitions, seen, at).recheck_at is None
