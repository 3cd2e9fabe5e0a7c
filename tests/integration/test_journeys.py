"""Journeys with second-scale waits on a real worker: the reminder after the wait, none after
the order, caps and quiet hours as journey events, the API's view, and waits that survive
SIGKILL."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker, free_port
from streams.runtime.metrics import sample_total

from .conftest import GUARANTEES, Topics, Worker, wait_until, worker_env

WAIT_S = 3
# The restart test's shoppers wait longer: their orders are placed while the worker is down,
# before their reminders are due.
RESTART_WAIT_S = 10
BACKLOG = 20_000
JOURNEYS = """
policies:
  frequency_caps: [{{channel: email, max: 1, per: 1h}}]
  quiet_hours: {{from: "21:00", to: "08:00", timezone_trait: timezone, default_timezone: UTC}}
journeys:
  - name: cart
    entry: {{event: page-view.add_to_cart}}
    consent: email_marketing
    exit_on: [{{event: order.placed, goal: true}}]
    steps:
      - wait: {wait_s}s
      - send: cart_reminder_1
        payload: [cart_items]
  - name: thanks
    entry: {{event: order.placed}}
    consent: email_marketing
    steps: [{{send: thanks_1}}]
"""


def zone_at(hour: int) -> str:
    """A time zone whose clock shows ``hour`` o'clock now (the Etc/GMT names invert the sign)."""
    offset = (hour - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"


def env_for(
    broker: EmbeddedBroker, tmp_path: Path, wait_s: int = WAIT_S, **extra: str
) -> dict[str, str]:
    journeys = tmp_path / "journeys.yaml"
    journeys.write_text(JOURNEYS.format(wait_s=wait_s))
    return worker_env(
        broker,
        tmp_path,
        CDP_JOURNEYS_FILE=str(journeys),
        CDP_RECHECK_INTERVAL_SECONDS="0.5",
        **extra,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def signup(email: str, zone: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"email": email},
        "traits": {"timezone": zone},
        "newsletter": "subscribed",
        "consent": {"email_marketing": True},
    }


def add_to_cart(email: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"email": email},
        "url": "https://shop.example/toys/pram",
        "category": "toys",
        "product_id": "pram",
        "action": "add_to_cart",
    }


def placed(email: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "occurred_at": now_ms(),
        "identity": {"email": email},
        "order_id": uuid.uuid4().hex[:8],
        "status": "placed",
        "total": 10.0,
        "currency": "EUR",
        "items": [{"product_id": "pram", "category": "toys", "quantity": 1, "unit_price": 10.0}],
    }


def test_reminder_after_the_wait_none_after_an_order_caps_and_quiet_hours_suppress(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(env_for(broker, tmp_path))
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    waits, orders, capped, night = (f"{who}-{run}@example.com" for who in "wocn")
    day, late = zone_at(12), zone_at(2)
    for email, zone in [(waits, day), (orders, day), (capped, day), (night, late)]:
        topics.produce(settings.input_topic(EventKind.IDENTIFY), signup(email, zone))
    topics.flush()
    wait_until(lambda: worker.get("/profiles", email=night).status_code == 200)
    # The capped shopper has had its one mail of the hour (the order's thanks) before the cart.
    topics.produce(settings.input_topic(EventKind.ORDER), placed(capped))
    topics.flush()
    wait_until(lambda: bool(worker.get("/profiles", email=capped).json()["journeys"]))
    added = time.time()
    for email in (waits, orders, capped, night):
        topics.produce(settings.input_topic(EventKind.PAGE_VIEW), add_to_cart(email))
    topics.flush()
    time.sleep(1)
    topics.produce(settings.input_topic(EventKind.ORDER), placed(orders))  # during the wait
    topics.flush()

    triggers = topics.wait_for(
        settings.journeys_topic,
        lambda seen: any(t["journey"] == "cart" for t in seen),
        timeout=WAIT_S + 20,
    )
    assert time.time() - added >= WAIT_S
    events = topics.wait_for(
        settings.journey_events_topic,
        lambda seen: {"frequency_cap", "quiet_hours"} <= {e["reason"] for e in seen},
        timeout=20,
    )
    time.sleep(2 * 0.5 + 1)  # any send that should not come would come by now
    topics.poll()
    triggers = topics.seen[settings.journeys_topic]
    events = topics.seen[settings.journey_events_topic]
    cart = [t for t in triggers if t["journey"] == "cart"]
    assert [t["email"] for t in cart] == [waits]
    assert cart[0]["payload"] == {"cart_items": ["pram"]}

    def of(email: str) -> list[dict[str, Any]]:
        pid = worker.get("/profiles", email=email).json()["profile_id"]
        return [e for e in events if e["profile_id"] == pid and e["journey"] == "cart"]

    assert [(e["kind"], e["reason"]) for e in of(orders)] == [
        ("entered", None),
        ("waiting", None),
        ("exited", "goal"),
    ]
    held = [(e["kind"], e["reason"], e["action"]) for e in of(capped)][-1]
    assert held == ("suppressed", "frequency_cap", "deferred")
    quiet = [e for e in of(night) if e["kind"] == "suppressed"]
    assert [(e["reason"], e["action"]) for e in quiet] == [("quiet_hours", "deferred")]
    # Deferred to 08:00 in the shopper's zone: six hours after 02:00 there, give or take.
    assert abs(quiet[0]["due_at"] - quiet[0]["occurred_at"] - 6 * 3_600_000) < 3_600_000
    for email in (waits, orders, capped, night):
        numbers = [e["sequence"] for e in events if e["profile_id"] == of(email)[0]["profile_id"]]
        assert numbers == list(range(1, len(numbers) + 1))

    pid = worker.get("/profiles", email=night).json()["profile_id"]
    view = worker.get(f"/profiles/{pid}/journeys").json()
    (state,) = [j for j in view["journeys"] if j["journey"] == "cart"]
    assert state["active"]
    assert state["position"] == "cart_reminder_1"
    assert view["next_due_at"] == quiet[0]["due_at"]
    assert [h["kind"] for h in view["history"]][-1] == "suppressed"
    assert worker.get("/profiles/p_000000000000000000000000/journeys").status_code == 404

    metrics = worker.get("/metrics").text
    assert sample_total(metrics, "cdp_journey_events_total", journey="cart", reason="goal") == 1
    assert sample_total(metrics, "cdp_journey_timers_pending") >= 2  # capped and night wait
    assert sample_total(metrics, "cdp_timer_lateness_seconds_count") >= 1
    topics.close()


PEOPLE = 1_000


@pytest.mark.faults
@pytest.mark.timeout(600)
@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_sigkill_while_many_profiles_wait_sends_every_due_step_once(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker], guarantee: str
) -> None:
    """1,000 shoppers wait for their reminder; the worker is killed while they wait, a tenth
    of them order while it is down, and it is restarted after the reminders are due: every
    other shopper gets one reminder, one trigger id each, and no buyer gets one although
    their orders are read after the reminders' due time. Under exactly_once the reminders are
    read read_committed, and no copy is counted at all."""
    env = env_for(broker, tmp_path, wait_s=RESTART_WAIT_S, CDP_PROCESSING_GUARANTEE=guarantee)
    worker = make_worker(env)
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    emails = [f"k{i}-{run}@example.com" for i in range(PEOPLE)]
    day = zone_at(12)
    for email in emails:
        topics.produce(settings.input_topic(EventKind.IDENTIFY), signup(email, day))
    topics.flush()
    # Every sign-up applied first: the page views are on another topic, read in no order
    # with the sign-ups, and a cart added before the consent enters no journey.
    unknown = set(emails)

    def all_known() -> bool:
        unknown.difference_update(
            [e for e in unknown if worker.get("/profiles", email=e).status_code == 200]
        )
        return not unknown

    wait_until(all_known, timeout=60)
    for email in emails:
        topics.produce(settings.input_topic(EventKind.PAGE_VIEW), add_to_cart(email))
    topics.flush()
    buyers = set(emails[::10])

    def buyers_due() -> list[int | None]:
        return [
            worker.get("/profiles", email=email).json().get("journey_due_at") for email in buyers
        ]

    wait_until(lambda: None not in buyers_due(), timeout=60, explain=lambda: worker.log_tail(60))
    first_due = min(due for due in buyers_due() if due is not None)
    worker.kill()  # while they wait
    # Behind other shops' orders: the restarted worker reads the buyers' orders well after
    # the reminders' due time, and must hold the reminders until it has.
    for i in range(BACKLOG):
        topics.produce(settings.input_topic(EventKind.ORDER), placed(f"o{i}-{run}@example.com"))
    for email in sorted(buyers):
        topics.produce(settings.input_topic(EventKind.ORDER), placed(email))
    topics.flush()
    assert time.time() * 1000 < first_due, "the orders must be placed before any reminder is due"
    time.sleep(RESTART_WAIT_S + 1)  # past every reminder's due time
    worker.start()

    waiting = set(emails) - buyers

    def reminded() -> set[str]:
        return {
            t["email"]
            for t in topics.seen.get(settings.journeys_topic, [])
            if t["journey"] == "cart"
        }

    topics.wait_for(settings.journeys_topic, lambda seen: reminded() >= waiting, timeout=120)
    time.sleep(3)
    for _ in range(10):
        topics.poll()
    cart = [t for t in topics.seen[settings.journeys_topic] if t["journey"] == "cart"]
    ids = Counter(t["trigger_id"] for t in cart)
    per_email = Counter(email for email, _ in {(t["email"], t["trigger_id"]) for t in cart})
    assert set(per_email) == waiting  # none lost, none for a buyer
    assert set(per_email.values()) == {1}  # one trigger id each: none twice in effect
    print(f"\nreminders {len(ids)}, copies re-sent {sum(ids.values()) - len(ids)}")
    if guarantee == "exactly_once":
        assert set(ids.values()) == {1}
    topics.close()


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_waits_move_with_their_partitions_when_a_worker_dies(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """Two workers share the partitions; one is killed while its shoppers wait and is not
    restarted: the other takes its partitions over, reads their waits from the tables and
    sends every reminder, one trigger id each."""
    first_env = env_for(broker, tmp_path)
    second_env = {
        **first_env,
        "CDP_DATA_DIR": str(tmp_path / "two" / "data"),
        "CDP_WEB_PORT": str(free_port()),
    }
    first, second = make_worker(first_env), make_worker(second_env)
    wait_until(lambda: first.get("/ready").status_code == 200, timeout=30)
    wait_until(lambda: second.get("/ready").status_code == 200, timeout=30)
    settings = first.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    run = uuid.uuid4().hex[:6]
    emails = [f"r{i}-{run}@example.com" for i in range(200)]
    day = zone_at(12)
    for email in emails:
        topics.produce(settings.input_topic(EventKind.IDENTIFY), signup(email, day))
    topics.flush()
    wait_until(
        lambda: all(second.get("/profiles", email=e).status_code == 200 for e in emails),
        timeout=60,
        interval=0.5,
    )
    for email in emails:
        topics.produce(settings.input_topic(EventKind.PAGE_VIEW), add_to_cart(email))
    topics.flush()
    wait_until(
        lambda: all(
            second.get("/profiles", email=e).json()["journey_due_at"] is not None for e in emails
        ),
        timeout=60,
        interval=0.5,
    )
    first.kill()  # its shoppers wait in its partitions

    def reminded() -> set[str]:
        cart = topics.seen.get(settings.journeys_topic, [])
        return {t["email"] for t in cart if t["journey"] == "cart"}

    topics.wait_for(settings.journeys_topic, lambda seen: reminded() >= set(emails), timeout=120)
    time.sleep(3)
    for _ in range(10):
        topics.poll()
    cart = [t for t in topics.seen[settings.journeys_topic] if t["journey"] == "cart"]
    per_email = Counter(email for email, _ in {(t["email"], t["trigger_id"]) for t in cart})
    assert set(per_email) == set(emails)
    assert set(per_email.values()) == {1}
    topics.close()
