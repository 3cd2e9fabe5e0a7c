"""Request-path decisions over a profile: pure, so the HTTP layer stays a thin lookup."""

from __future__ import annotations

from dataclasses import dataclass

from streams.profiles.model import Profile


@dataclass(frozen=True, slots=True)
class PopupDecision:
    show: bool
    reason: str  # known_subscriber | recently_shown | unknown_visitor | not_subscribed


def newsletter_popup(profile: Profile | None, now_ms: int, cooldown_ms: int) -> PopupDecision:
    """Show the newsletter pop-up only to non-subscribers, and not again within the cooldown."""
    if profile is None:
        return PopupDecision(True, "unknown_visitor")
    if profile.newsletter == "subscribed":
        return PopupDecision(False, "known_subscriber")
    if profile.popup_shown_at is not None and now_ms - profile.popup_shown_at < cooldown_ms:
        return PopupDecision(False, "recently_shown")
    return PopupDecision(True, "not_subscribed")
