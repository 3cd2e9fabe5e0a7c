"""The benchmark's in-memory pipeline runs the real steps: what it measures is the real core."""

from __future__ import annotations

from benchmarks.core import InMemoryPipeline
from streams.demo.traffic import ShopperSimulation
from streams.settings import Settings


def test_the_in_memory_pipeline_folds_every_event_and_emits_outputs() -> None:
    events = list(ShopperSimulation(seed=1, shoppers=50, start_ms=1_790_000_000_000).stream(400))
    pipeline = InMemoryPipeline(Settings())
    run = pipeline.run(events)
    assert run.events == 400
    assert run.outputs > 0  # segment changes and journey triggers
    emails = {e.identity.email for e in events if e.identity.email}
    assert len(pipeline.profiles) >= len(emails) > 0
    report = run.report()
    assert report["events_per_s"] > 0
    assert report["profile_us_per_event"] > 0


def test_batches_change_when_the_tables_are_written_not_what_they_hold() -> None:
    events = list(ShopperSimulation(seed=2, shoppers=80, start_ms=1_790_000_000_000).stream(600))
    one_by_one = InMemoryPipeline(Settings(batch_max_messages=1))
    batched = InMemoryPipeline(Settings(batch_max_messages=500))
    assert one_by_one.run(events).outputs == batched.run(events).outputs
    assert batched.profiles == one_by_one.profiles
    assert batched.identities == one_by_one.identities
