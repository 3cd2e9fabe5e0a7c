"""Stays on the profile: kept from orders (bounded, past ones dropped), merged, stored, and
read by CEL as ``profile.stays.current`` / ``profile.stays.next_starts_at``, with a recheck
at each stay's start and end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.events import Event, EventKind
from streams.profiles.merge import merge
from streams.profiles.model import STAYS_LIMIT, Profile, Stay
from streams.segments.clock import ClockTerm, clock_terms
from streams.segments.conditions import compile_condition
from streams.segments.definitions import load_segments
from streams.segments.evaluator import evaluate
from streams.segments.view import cel_view, ms_to_datetime
from tests.unit.test_reducer import T0, event, fold, order

DAY = 86_400_000


def booking(order_id: str, starts: int, ends: int, at: int = T0, **kw: Any) -> Event:
    item = {"product_id": "cabin", "category": "stay", "quantity": 1, "unit_price": 500.0}
    body = {"order_id": order_id, "status": "placed", "total": 500.0, "currency": "EUR"}
    items = [item | {"starts_at": starts, "ends_at": ends}, item | {"product_id": "sauna"}]
    return event(EventKind.ORDER, body | {"items": items}, at=at, **kw)


def test_an_order_books_a_stay_and_a_cancellation_or_refund_removes_it() -> None:
    p = fold([booking("o-1", T0 + 7 * DAY, T0 + 10 * DAY), booking("o-2", T0 + DAY, T0 + 2 * DAY)])
    assert p.stays == (
        Stay("o-2", T0 + DAY, T0 + 2 * DAY),
        Stay("o-1", T0 + 7 * DAY, T0 + 10 * DAY),
    )
    assert fold([order("cancelled", [], order_id="o-1", at=T0 + 1)], p).stays == p.stays[:1]
    assert fold([order("refunded", [], order_id="o-2", at=T0 + 1)], p).stays == p.stays[1:]
    # An order without dates books none.
    assert fold([order("placed", [("cabin", "stay")])]).stays == ()


def test_past_stays_are_dropped_and_the_stays_kept_are_bounded() -> None:
    p = fold([booking("o-1", T0, T0 + DAY)])
    later = fold([booking("o-2", T0 + 5 * DAY, T0 + 6 * DAY, at=T0 + 2 * DAY)], p)
    assert [s.order_id for s in later.stays] == ["o-2"]
    many = fold(
        [booking(f"o-{i}", T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(1, STAYS_LIMIT + 3)]
    )
    assert len(many.stays) == STAYS_LIMIT
    assert many.stays[-1].order_id == f"o-{STAYS_LIMIT + 2}"  # the latest-ending are kept


def test_stays_merge_and_are_stored_and_read_from_a_book_of_before() -> None:
    a = fold([booking("o-1", T0 + DAY, T0 + 2 * DAY, email="a@example.com")])
    b = fold([booking("o-2", T0 + 3 * DAY, T0 + 4 * DAY, email="b@example.com")])
    merged = merge(a, b)
    assert [s.order_id for s in merged.stays] == ["o-1", "o-2"]
    assert Profile.from_json(merged.to_json()).stays == merged.stays
    # Profiles stored before the profile kept stays had them in the journey book.
    stored = merged.to_dict()
    del stored["stays"]
    stored["journey_flows"] = {"states": {}, "stays": [["o-9", T0, T0 + DAY]]}
    assert Profile.from_dict(stored).stays == (Stay("o-9", T0, T0 + DAY),)


def test_cel_sees_whether_a_stay_is_current_and_when_the_next_starts() -> None:
    p = fold([booking("o-1", T0 + DAY, T0 + 3 * DAY), booking("o-2", T0 + 5 * DAY, T0 + 6 * DAY)])
    assert cel_view(p, ["stays"], T0) == {
        "stays": {"current": False, "next_starts_at": ms_to_datetime(T0 + DAY)}
    }
    assert cel_view(p, ["stays.current"], T0 + 2 * DAY) == {"stays": {"current": True}}
    assert cel_view(p, ["stays.next_starts_at"], T0 + 5 * DAY) == {
        "stays": {"next_starts_at": None}
    }
    soon = compile_condition(
        "profile.stays.next_starts_at != null"
        ' && profile.stays.next_starts_at - now < duration("48h")'
    )
    assert not soon(p, T0 - DAY)
    assert soon(p, T0)
    assert not soon(p, T0 + 5 * DAY)


def test_a_segment_on_stays_is_rechecked_when_a_stay_starts_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(
        "segments:\n"
        "  - name: on_stay\n    when: 'profile.stays.current'\n"
        "  - name: booked\n    when: 'profile.stays.next_starts_at != null'\n"
    )
    definitions = load_segments(path)
    p = fold([booking("o-1", T0 + DAY, T0 + 3 * DAY)])
    before = evaluate(definitions, p, T0)
    assert before.members == {"booked"}
    assert before.recheck_at == T0 + DAY
    p.segments, p.segment_recheck_at = tuple(sorted(before.members)), before.recheck_at
    during = evaluate(definitions, p, T0 + DAY, previous=p)  # the recheck, no event
    assert during.members == {"on_stay"}
    assert during.recheck_at == T0 + DAY + 1
    after = evaluate(definitions, p, T0 + 3 * DAY)
    assert after.members == frozenset()
    assert after.recheck_at == T0 + 3 * DAY + 1
    assert evaluate(definitions, p, T0 + 3 * DAY + 2).recheck_at is None


def test_a_segment_on_the_time_until_the_next_stay_is_rechecked_that_long_before_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(
        "segments:\n  - name: arriving\n    when: 'profile.stays.next_starts_at != null"
        ' && profile.stays.next_starts_at - now < duration("168h")\'\n'
    )
    (definition,) = load_segments(path)
    # `next start - now < 168h` turns true a millisecond after the week before it; a stay's
    # own edges (`stays.current`) at either of two instants.
    assert definition.clock == (ClockTerm("stays", -7 * DAY, (1,)), ClockTerm("stays", 0))
    p = fold([booking("o-1", T0 + 10 * DAY, T0 + 12 * DAY)])
    before = evaluate([definition], p, T0)
    assert before.members == frozenset()
    assert before.recheck_at == T0 + 3 * DAY + 1
    assert evaluate([definition], p, T0 + 3 * DAY + 1).members == {"arriving"}
    assert evaluate([definition], p, T0 + 10 * DAY).members == frozenset()


def test_the_time_ahead_form_of_a_clock_term() -> None:
    assert clock_terms('profile.last_order_at - now > duration("-1h")') == (
        ClockTerm("last_order_at", 3_600_000, (0,)),
    )
    # Not a term: the difference is an operand of something else.
    assert clock_terms('2 * profile.last_order_at - now > duration("1h")') is None
