"""``cdp journeys check`` and ``cdp journeys simulate``: no Kafka, no worker."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import cli

SHIPPED = Path(__file__).parents[2] / "streams" / "journeys" / "default_journeys.yaml"
RUNNER = CliRunner()
AT = 1_709_539_200_000  # 2024-03-04 08:00 UTC, 09:00 in Amsterdam

SIGNUP = {
    "kind": "identify",
    "event_id": "s1",
    "occurred_at": AT,
    "identity": {"email": "ann@example.com"},
    "traits": {"first_name": "Ann"},
    "newsletter": "subscribed",
    "consent": {"email_marketing": True},
}
CART = {
    "kind": "page-view",
    "event_id": "c1",
    "occurred_at": AT + 3_600_000,
    "identity": {"email": "ann@example.com"},
    "url": "https://shop/pram",
    "action": "add_to_cart",
    "product_id": "pram",
    "category": "toys",
}


def test_check_lists_the_journeys_of_a_valid_file() -> None:
    result = RUNNER.invoke(cli, ["journeys", "check", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    assert "abandoned_cart: entry event:page-view.add_to_cart" in result.output
    assert "ok: 7 journeys" in result.output


def test_check_names_journey_step_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "j.yaml"
    bad.write_text(
        "journeys:\n  - name: cart\n    entry: {event: page-view.add_to_cart}\n"
        "    consent: email_marketing\n    steps: [{send: a}, {wait: soon}]\n"
    )
    result = RUNNER.invoke(cli, ["journeys", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: cart: step 2: wait needs a duration" in result.output


def test_simulate_prints_what_is_sent_when(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in [SIGNUP, CART]) + "\n")
    args = ["journeys", "simulate", str(SHIPPED), "--events", str(events), "--after", "2d"]
    result = RUNNER.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sends = [
        (line["journey"], line["step"], line["occurred_at"])
        for line in lines
        if line["kind"] == "send"
    ]
    assert sends == [
        ("welcome", "welcome_1", AT),
        ("abandoned_cart", "cart_reminder_1", AT + 2 * 3_600_000),  # after the hour's wait
        ("abandoned_cart", "cart_reminder_2", AT + 25 * 3_600_000),
    ]
    text = RUNNER.invoke(cli, args)
    assert "SEND abandoned_cart/cart_reminder_1 to ann@example.com" in text.stdout
    assert "2024-03-04 10:00:00Z" in text.stdout


def test_simulate_refuses_events_it_cannot_read(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({**CART, "kind": "purchase"}) + "\n" + "{oops\n")
    result = RUNNER.invoke(cli, ["journeys", "simulate", str(SHIPPED), "--events", str(events)])
    assert result.exit_code == 1
    assert 'line 1: each event needs "kind"' in result.output
    assert "line 2: invalid JSON" in result.output
