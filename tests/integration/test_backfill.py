"""The background evaluation, end to end: a worker restarted with a new segment evaluates its
stored profiles under it without new events, and a new journey with ``backfill: true``
enters the segment's current members."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.codec import Codec
from streams.events import EventKind, now_ms
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.metrics import sample_total
from streams.settings import PROJECT_ROOT
from streams.steps.process import Rules, backfill_cause

from .conftest import ONE_STEP_JOURNEYS, Topics, Worker, wait_until, worker_env

BIG_SPENDER = "  - name: big_spender\n    when: 'profile.orders.revenue >= 100.0'\n"
THANKS = """
  - name: thanks
    entry: {segment_entered: big_spender}
    consent: email_marketing
    backfill: true
    steps: [{send: thanks_1}]
"""


def customer(email: str, total: float) -> list[tuple[EventKind, dict[str, Any]]]:
    identity = {"email": email}
    return [
        (
            EventKind.IDENTIFY,
            {
                "event_id": uuid.uuid4().hex,
                "occurred_at": now_ms(),
                "identity": identity,
                "newsletter": "subscribed",
                "consent": {"email_marketing": True},
            },
        ),
        (
            EventKind.ORDER,
            {
                "event_id": uuid.uuid4().hex,
                "occurred_at": now_ms(),
                "identity": identity,
                "order_id": uuid.uuid4().hex[:8],
                "status": "placed",
                "total": total,
                "currency": "EUR",
                "items": [
                    {"product_id": "pram", "category": "toys", "quantity": 1, "unit_price": total}
                ],
            },
        ),
    ]


def test_a_new_segment_is_evaluated_for_stored_profiles_and_a_backfill_journey_enters_them(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    segments_file, journeys_file = tmp_path / "segments.yaml", tmp_path / "journeys.yaml"
    shipped = (PROJECT_ROOT / "streams/segments/default_segments.yaml").read_text()
    segments_file.write_text(shipped)
    journeys_file.write_text(ONE_STEP_JOURNEYS.read_text())
    env = worker_env(
        broker,
        tmp_path,
        CDP_SEGMENTS_FILE=str(segments_file),
        CDP_JOURNEYS_FILE=str(journeys_file),
        CDP_BACKFILL_RATE="2",
    )
    worker = make_worker(env)
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    big = [f"big{i}-{run}@example.com" for i in range(4)]
    small = f"small-{run}@example.com"
    for email, total in [*((e, 500.0) for e in big), (small, 20.0)]:
        for kind, event in customer(email, total):
            topics.produce(settings.input_topic(kind), event)
    topics.flush()
    def stored(email: str) -> bool:
        found = worker.get("/profiles", email=email)
        return found.status_code == 200 and found.json()["orders"]["placed"] == 1

    wait_until(lambda: all(stored(email) for email in [*big, small]), timeout=30)
    worker.stop()

    # Restarted with a new segment and a new journey on it: no new event.
    segments_file.write_text(shipped + BIG_SPENDER)
    journeys_file.write_text(ONE_STEP_JOURNEYS.read_text() + THANKS)
    cause = backfill_cause(Rules.load(segments_file, journeys_file))
    restarted = make_worker(env)
    changes = topics.wait_for(
        settings.segment_changes_topic,
        lambda seen: len([c for c in seen if c["segment"] == "big_spender"]) >= len(big),
        timeout=60,
    )
    entered = [c for c in changes if c["segment"] == "big_spender"]
    assert {c["change"] for c in entered} == {"entered"}
    assert {c["cause_event_id"] for c in entered} == {cause}
    triggers = topics.wait_for(
        settings.journeys_topic,
        lambda seen: len([t for t in seen if t["journey"] == "thanks"]) >= len(big),
        timeout=30,
    )
    thanked = [t for t in triggers if t["journey"] == "thanks"]
    assert sorted(t["email"] for t in thanked) == sorted(big)
    assert {t["cause_event_id"] for t in thanked} == {cause}
    # Every profile evaluated, the small one included (a member of nothing new), and then
    # none is left.
    wait_until(
        lambda: (
            sample_total(restarted.get("/metrics").text, "cdp_backfill_profiles_evaluated_total")
            >= len(big) + 1
        ),
        timeout=30,
    )
    wait_until(
        lambda: sample_total(restarted.get("/metrics").text, "cdp_backfill_profiles_pending") == 0,
        timeout=30,
    )
    profile = restarted.get("/profiles", email=big[0]).json()
    assert "big_spender" in profile["segments"]
    assert "big_spender" not in restarted.get("/profiles", email=small).json()["segments"]
    topics.close()
