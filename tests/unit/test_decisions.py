"""The newsletter pop-up decision."""

from __future__ import annotations

import pytest

from streams.api.decisions import PopupDecision, newsletter_popup
from streams.profiles.model import Profile
from tests.unit.test_reducer import T0, fold, identify, page_view

DAY = 86_400_000
COOLDOWN = 7 * DAY


def test_unknown_visitor_sees_the_popup() -> None:
    assert newsletter_popup(None, T0, COOLDOWN) == PopupDecision(True, "unknown_visitor")


def test_known_subscriber_never_sees_it() -> None:
    p = fold([identify(newsletter="subscribed")])
    assert newsletter_popup(p, T0, COOLDOWN) == PopupDecision(False, "known_subscriber")


@pytest.mark.parametrize(
    ("since_shown", "expected"),
    [
        (0, PopupDecision(False, "recently_shown")),
        (COOLDOWN - 1, PopupDecision(False, "recently_shown")),
        (COOLDOWN, PopupDecision(True, "not_subscribed")),
    ],
)
def test_cooldown_after_showing(since_shown: int, expected: PopupDecision) -> None:
    p = fold([page_view(action="popup_shown", at=T0)])
    assert newsletter_popup(p, T0 + since_shown, COOLDOWN) == expected


def test_known_non_subscriber_sees_it() -> None:
    p = fold([page_view("toys"), identify(newsletter="unsubscribed")])
    assert newsletter_popup(p, T0, COOLDOWN) == PopupDecision(True, "not_subscribed")
    assert newsletter_popup(Profile.new("p"), T0, COOLDOWN).show
