"""The demo's live view: counters from output records, and what a viewer actually sees."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rich.console import Console, RenderableType

from streams.demo.dashboard import FEED_SIZE, DemoStats, render, summary

OCCURRED = 1_732_350_000_000  # 08:20:00 UTC
URLS = [
    "http://127.0.0.1:6066/profiles?email=anna.smith1@example.com",
    "http://127.0.0.1:6066/decisions/popup?anonymous_id=a-1",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _text(renderable: RenderableType, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def _change(profile: str, segment: str, change: str = "entered", seq: int = 1) -> dict[str, Any]:
    return {
        "profile_id": profile,
        "segment": segment,
        "change": change,
        "sequence": seq,
        "occurred_at": OCCURRED,
        "cause_event_id": "e-1",
    }


def _trigger(profile: str, journey: str, step: str = "send") -> dict[str, Any]:
    return {
        "trigger_id": f"t-{profile}",
        "journey": journey,
        "step": step,
        "profile_id": profile,
        "email": "anna.smith1@example.com",
        "occurred_at": OCCURRED,
        "cause_event_id": "e-2",
        "payload": {"interests": ["toys"]},
    }


def _journey_event(
    profile: str, journey: str, kind: str = "suppressed", action: str | None = "deferred"
) -> dict[str, Any]:
    return {
        "event_id": f"j-{profile}",
        "profile_id": profile,
        "journey": journey,
        "kind": kind,
        "step": "cart_reminder_1",
        "reason": "quiet_hours" if kind == "suppressed" else None,
        "action": action,
        "due_at": OCCURRED + 12 * 3_600_000 if action == "deferred" else None,
        "occurred_at": OCCURRED,
        "sequence": 1,
        "entry_id": "e-3",
        "cause_id": "timer:1",
    }


def _dead_letter(reason: str) -> dict[str, Any]:
    return {
        "topic": "cdp.orders",
        "partition": 0,
        "offset": 7,
        "key": None,
        "value": "e30=",
        "reason": reason,
        "detail": "total: expected a double",
        "occurred_at": OCCURRED,
    }


@pytest.fixture
def stats() -> DemoStats:
    clock = FakeClock()
    stats = DemoStats(clock=clock)
    clock.now += 10
    stats.record_produced("page-view", 4_000)
    stats.record_produced("order", 250)
    stats.record_produced("email", 750)
    for n in range(3):
        stats.record_segment_change(_change(f"p_3fa9{n}c81d2", "interest_toys", seq=n))
    stats.record_segment_change(_change("p_3fa90c81d2", "interest_toys", "exited", seq=9))
    stats.record_segment_change(_change("p_77aa01", "subscribers"))
    stats.record_trigger(_trigger("p_3fa90c81d2", "welcome", "ask_name"))
    stats.record_trigger(_trigger("p_77aa01", "welcome", "ask_name"))
    stats.record_trigger(_trigger("p_77aa01", "inspiration"))
    stats.record_journey_event(_journey_event("p_77aa01", "abandoned_cart"))
    stats.record_journey_event(_journey_event("p_77aa01", "abandoned_cart", action="skipped"))
    stats.record_journey_event(_journey_event("p_77aa01", "welcome", "waiting", None))
    stats.record_dead_letter(_dead_letter("schema_violation"))
    stats.record_dead_letter(_dead_letter("schema_violation"))
    stats.record_dead_letter(_dead_letter("invalid_json"))
    return stats


def test_counters_follow_the_records(stats: DemoStats) -> None:
    assert stats.produced == {"page-view": 4_000, "order": 250, "email": 750}
    assert stats.total_produced == 5_000
    assert stats.segment_entries == {"interest_toys": 3, "subscribers": 1}
    assert stats.segment_exits == {"interest_toys": 1}
    assert stats.triggers == {"welcome": 2, "inspiration": 1}
    assert stats.deferred == {"abandoned_cart": 1}
    assert stats.deferred_reasons == {"quiet_hours": 1}
    assert stats.dead_letters == {"schema_violation": 2, "invalid_json": 1}
    assert stats.profiles == {"p_3fa90c81d2", "p_3fa91c81d2", "p_3fa92c81d2", "p_77aa01"}
    assert stats.feed[-1] == (
        "blue",
        "08:20:00 p_77aa01 deferred abandoned_cart/cart_reminder_1 (quiet_hours) to 20:20:00 UTC",
    )
    assert (
        "cyan",
        "08:20:00 p_77aa01 triggered inspiration/send → anna.smith1@example.com",
    ) in stats.feed
    assert ("green", "08:20:00 p_3fa90c… entered interest_toys") in stats.feed
    assert ("yellow", "08:20:00 p_3fa90c… exited interest_toys") in stats.feed


def test_throughput_is_measured_over_a_sliding_window() -> None:
    clock = FakeClock()
    stats = DemoStats(clock=clock)
    # Two seconds into the run: rate over the time covered so far, not the full window.
    clock.now += 2
    stats.record_produced("page-view", 2_000)
    assert stats.events_per_second() == pytest.approx(1_000)
    clock.now += 4
    stats.record_produced("page-view", 3_000)
    assert stats.events_per_second() == pytest.approx(5_000 / 5)
    # Once the first burst slides out of the 5 s window only the second one counts.
    clock.now += 2
    assert stats.events_per_second() == pytest.approx(3_000 / 5)
    clock.now += 10
    assert stats.events_per_second() == 0
    assert stats.total_produced == 5_000


def test_the_feed_keeps_only_the_latest_lines() -> None:
    stats = DemoStats()
    for n in range(FEED_SIZE + 5):
        stats.record_segment_change(_change(f"p_{n:04d}", "interest_baking", seq=n))
    assert len(stats.feed) == FEED_SIZE
    assert stats.feed[0][1].endswith(f"p_{5:04d} entered interest_baking")
    assert stats.feed[-1][1].endswith(f"p_{FEED_SIZE + 4:04d} entered interest_baking")


def test_malformed_records_do_not_break_the_view() -> None:
    stats = DemoStats()
    stats.record_segment_change({})
    stats.record_trigger({"journey": "welcome", "occurred_at": "yesterday"})
    stats.record_dead_letter({})
    text = _text(render(stats, api_urls=[], elapsed_s=1, duration_s=None))
    assert "unknown" in text
    assert "welcome" in text


def test_render_shows_numbers_names_urls_and_feed(stats: DemoStats) -> None:
    text = _text(render(stats, api_urls=URLS, elapsed_s=12.4, duration_s=60))
    assert "cdp-streams demo" in text
    assert "12 s / 60 s" in text
    assert "1,000 events/s" in text  # 5,000 events, all within the last 5 s
    assert "5,000 events produced" in text
    assert "email 750 · order 250 · page-view 4,000" in text
    assert "4 profiles" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("interest_toys"))
    assert row.split()[:4] == ["interest_toys", "3", "1", "2"]  # entered, exited, members
    assert "subscribers" in text
    assert "inspiration" in text
    assert "p_3fa90c… exited interest_toys" in text
    assert "p_77aa01 triggered welcome/ask_name" in text
    for url in URLS:
        assert url in text
    assert "Dead letters: 3 (invalid_json 1 · schema_violation 2)" in text
    assert "total: expected a double" in text


def test_render_before_anything_happened() -> None:
    text = _text(render(DemoStats(), api_urls=URLS[:1], elapsed_s=0, duration_s=None))
    assert "waiting for segment changes" in text
    assert "waiting for triggers" in text
    assert "Dead letters: 0" in text
    assert "0 events/s" in text
    assert "/ " not in text.split("running", 1)[1].split("\n", 1)[0]


def test_summary_reports_totals(stats: DemoStats) -> None:
    text = _text(summary(stats, elapsed_s=20))
    assert "cdp-streams demo — summary" in text
    # "│   segment entries       4   │" -> {"segment entries": "4"}
    rows = {}
    for line in text.splitlines():
        cells = [c for c in line.strip("│ ").split("  ") if c.strip()]
        if len(cells) == 2:
            rows[cells[0].strip()] = cells[1].strip()
    assert rows["duration"] == "20.0 s"
    assert rows["events produced"] == "5,000 (250/s on average)"
    assert rows["profiles in outputs"] == "4"
    assert rows["segment entries"] == "4"
    assert rows["segment exits"] == "1"
    assert rows["journey triggers"] == "3"
    assert rows["journey sends deferred"] == "1"
    assert "quiet_hours 1" in text
    assert rows["dead letters"] == "3"
    assert "interest_toys" in text
    assert "inspiration" in text


def test_a_run_at_night_shows_the_deferred_sends() -> None:
    """In quiet hours every send is deferred: the journeys table says so instead of waiting."""
    stats = DemoStats()
    stats.record_journey_event(_journey_event("p_1", "welcome"))
    text = _text(render(stats, api_urls=[], elapsed_s=1, duration_s=None))
    assert "waiting for triggers" not in text
    assert re.search(r"welcome +0 +1\b", text)  # triggers, deferred
    assert "p_1 deferred welcome/cart_reminder_1 (quiet_hours)" in text


def test_the_summary_does_not_cut_names_in_80_columns() -> None:
    """The summary is printed once, often to a pipe or a CI log 80 columns wide."""
    stats = DemoStats()
    stats.record_segment_change(_change("p_1", "newsletter_subscriber"))
    stats.record_trigger(_trigger("p_1", "interest_inspiration"))
    stats.record_journey_event(_journey_event("p_1", "post_purchase"))
    text = _text(summary(stats, elapsed_s=1), width=80)
    for name in ("newsletter_subscriber", "interest_inspiration", "post_purchase", "deferred"):
        assert name in text
