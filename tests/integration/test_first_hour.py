"""What a newcomer meets in the first hour, against a real broker and worker: kcat, cdp
produce refusing a bad file before it sends, JSON errors for every route, the demo's output
when it is not on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from streams.runtime.broker import EmbeddedBroker, free_port

from .conftest import Worker, run_cdp, wait_until


def page_view(event_id: str, anonymous_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "occurred_at": "2026-11-23T10:00:00Z",
        "identity": {"anonymous_id": anonymous_id},
        "url": "https://shop.example/toys",
        "category": "toys",
    }


def test_kcat_lists_produces_and_consumes_on_the_embedded_broker(
    broker: EmbeddedBroker, worker: Worker
) -> None:
    listed = run_cdp(worker.env, "kcat", "-L", "-b", broker.bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert f'topic "{worker.settings.dead_letter_topic}"' in listed.stdout
    anonymous_id = f"kcat-{uuid.uuid4().hex[:8]}"
    event = json.dumps(page_view(f"{anonymous_id}-1", anonymous_id))
    topic = worker.settings.input_topics[0]
    produced = subprocess.run(
        [sys.executable, "-m", "streams", "kcat", "-P", "-b", broker.bootstrap, "-t", topic,
         "-X", "partitioner=murmur2_random", "-k", f"anonymous_id:{anonymous_id}"],
        input=event, env=worker.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    wait_until(
        lambda: worker.get("/profiles", anonymous_id=anonymous_id).status_code == 200, timeout=20
    )
    consumed = run_cdp(
        worker.env, "kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning",
        "-e", "-q", "-f", "%k %s\n",
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr
    assert f"anonymous_id:{anonymous_id} {event}" in consumed.stdout.splitlines()


def test_cdp_produce_sends_nothing_from_a_file_with_a_bad_event(worker: Worker) -> None:
    visitor = f"p-{uuid.uuid4().hex[:8]}"
    good = json.dumps(page_view(f"{visitor}-refused", visitor), indent=2)
    undated = {k: v for k, v in page_view(f"{visitor}-x", visitor).items() if k != "occurred_at"}
    stdin = f"{good}\n{json.dumps(undated)}\n".encode()
    refused = run_cdp(worker.env, "produce", "page-view", stdin=stdin)
    assert refused.returncode == 1
    second_line = good.count("\n") + 2
    assert f"line {second_line}: schema_violation: occurred_at" in refused.stderr
    pretty = "\n".join(json.dumps(page_view(f"{visitor}-{n}", visitor), indent=2) for n in range(3))
    sent = run_cdp(worker.env, "produce", "page-view", stdin=pretty.encode())
    assert sent.returncode == 0, sent.stderr
    assert "produced 3 events" in sent.stderr

    def page_views() -> int:
        answer = worker.get("/profiles", anonymous_id=visitor)
        return int(answer.json()["views"]["count"]) if answer.status_code == 200 else 0

    # The refused file's good event, had it been sent, would have been applied first.
    wait_until(lambda: page_views() >= 3, timeout=20)
    assert page_views() == 3


def test_every_error_of_the_api_is_json(worker: Worker) -> None:
    for path in ("/nope", "/profiles/", "/decisions/unknown"):
        answer = worker.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"
        assert "/decisions/newsletter-popup" in answer.json()["message"]
    wrong_method = httpx.post(f"{worker.api}/health", timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    bad = worker.get("/profiles", phone="1")
    assert bad.status_code == 400
    assert set(bad.json()) == {"error", "message"}


def test_the_demo_prints_progress_lines_when_piped(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDP_")},
        "CDP_EMBEDDED_BROKER_PORT": str(free_port()),
        "CDP_WEB_PORT": str(free_port()),
        "CDP_COLLECTOR_PORT": str(free_port()),
        "CDP_DEMO_SHOP_PORT": str(free_port()),
        "CDP_DATA_DIR": str(tmp_path / "data"),
        "CDP_SESSION_TIMEOUT_SECONDS": "6",
    }
    demo = run_cdp(env, "demo", "--duration", "8", "--rate", "50")
    assert demo.returncode == 0, demo.stderr
    progress = [line for line in demo.stdout.splitlines() if " events produced (" in line]
    assert len(progress) >= 2, demo.stdout
    assert "summary" in demo.stdout
