"""``cdp dead-letters list|replay`` against a real worker: inspect, fix, replay."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker

from .conftest import Topics, Worker, run_cdp, wait_until, worker_env
from .test_pipeline import sign_up


def test_dead_letters_are_listed_and_replayed_after_a_fix(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    env = worker_env(broker, tmp_path, CDP_MAX_EVENT_BYTES="1024")
    strict = make_worker(env)
    settings = strict.settings
    email = f"long-{uuid.uuid4().hex[:8]}@example.com"
    too_large = sign_up("a-long", email)
    too_large["traits"]["bio"] = "x" * 2000
    large_bytes = json.dumps(too_large).encode()
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    topics.produce(settings.input_topic(EventKind.IDENTIFY), large_bytes, key=email.encode())
    topics.produce(settings.input_topic(EventKind.ORDER), b"{oops")
    topics.flush()
    topics.wait_for(settings.dead_letter_topic, lambda seen: len(seen) >= 2)
    topics.close()

    listed = run_cdp(env, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout
    assert "payload_too_large" in listed.stdout
    assert "invalid_json" in listed.stdout
    as_json = run_cdp(env, "dead-letters", "list", "--json", "--reason", "payload_too_large")
    [letter] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert base64.b64decode(letter["value"]) == large_bytes
    assert letter["topic"] == settings.input_topic(EventKind.IDENTIFY)

    unfiltered = run_cdp(env, "dead-letters", "replay")
    assert unfiltered.returncode == 2
    assert "--reason" in unfiltered.stderr
    dry = run_cdp(env, "dead-letters", "replay", "--reason", "payload_too_large", "--dry-run")
    assert "would replay 1 letters" in dry.stdout

    # The fix: a worker that accepts larger events.
    strict.stop()
    relaxed = make_worker({**env, "CDP_MAX_EVENT_BYTES": str(1 << 20)})
    replayed = run_cdp(env, "dead-letters", "replay", "--at", letter["at"])
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 letters" in replayed.stdout
    wait_until(lambda: relaxed.get("/profiles", email=email).status_code == 200, timeout=20)
    assert relaxed.get("/profiles", email=email).json()["traits"]["bio"]["value"] == "x" * 2000
