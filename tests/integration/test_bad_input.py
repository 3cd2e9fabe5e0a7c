"""Poison input never stops a partition: the whole bad-input corpus through a real worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.codec import Codec
from streams.events import EventKind
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.metrics import sample_total
from tests import bad_inputs

from .conftest import GUARANTEES, Topics, Worker, wait_until, worker_env


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_every_bad_input_is_dead_lettered_with_its_reason_and_good_input_is_applied(
    broker: EmbeddedBroker, tmp_path: Path, make_worker: Callable[..., Worker], guarantee: str
) -> None:
    worker = make_worker(
        worker_env(
            broker,
            tmp_path,
            CDP_MAX_EVENT_BYTES=str(bad_inputs.MAX_EVENT_BYTES),
            CDP_PROCESSING_GUARANTEE=guarantee,
        )
    )
    settings = worker.settings
    topics = Topics(broker.bootstrap, settings, Codec(settings.schemas_dir))
    cases = bad_inputs.corpus(Codec(settings.schemas_dir))
    visitor = f"good-{uuid.uuid4().hex[:8]}"
    page_views = settings.input_topic(EventKind.PAGE_VIEW)
    for index, case in enumerate(cases):
        good = bad_inputs.valid(
            EventKind.PAGE_VIEW,
            event_id=f"{visitor}-{index}",
            occurred_at="2026-11-23T10:00:00Z",
            identity={"anonymous_id": visitor},
        )
        topics.produce(page_views, json.dumps(good).encode(), key=visitor.encode())
        topics.produce(settings.input_topic(case.kind), case.value, key=b"bad")
    topics.flush()

    letters = topics.wait_for(
        settings.dead_letter_topic, lambda seen: len(seen) >= len(cases), timeout=30
    )
    reasons = {letter["value"]: letter["reason"] for letter in letters}
    assert len(letters) == len(cases)
    for case in cases:
        assert reasons.get(case.value) == case.reason, case.name
    for letter in letters:
        assert letter["detail"]
        assert letter["topic"] in settings.input_topics

    def all_good_applied() -> bool:
        response = worker.get("/profiles", anonymous_id=visitor)
        return response.status_code == 200 and response.json()["views"]["count"] == len(cases)

    wait_until(all_good_applied, timeout=20)
    assert worker.process is not None
    assert worker.process.poll() is None
    assert worker.log_file.read_text().count("[^Worker]: Starting") == 1
    assert sample_total(worker.get("/metrics").text, "cdp_dead_letters_total") == len(cases)
    topics.close()
