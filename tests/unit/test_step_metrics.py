"""What the worker keeps beside each profile step: the schedules its timers run from."""

from __future__ import annotations

from streams.profiles.model import Erased, Profile
from streams.profiles.retention import Retention
from streams.runtime.recheck_schedule import RecheckSchedule
from streams.runtime.step_metrics import StepMetrics
from streams.settings import Settings
from streams.steps.messages import Out, Send
from streams.steps.profile import Expire, ProfileStep
from tests.unit.test_reducer import T0


def test_the_schedules_handed_in_empty_are_the_ones_filled() -> None:
    rechecks, timers, expiries = RecheckSchedule(), RecheckSchedule(), RecheckSchedule()
    metrics = StepMetrics(Settings(), rechecks, timers, expiries, Retention(anonymous_ms=1_000))
    profile = Profile.new("p_1")
    profile.last_seen, profile.journey_due_at = T0, T0 + 60_000
    metrics.profile_stepped(Send(Out.PROFILE, "p_1", Expire()), ProfileStep(store=profile), {}, 3)
    assert [len(s) for s in (rechecks, timers, expiries)] == [1, 1, 1]
    assert expiries.pop_due(T0 + 1_000) == [(3, "p_1", T0 + 1_000)]
    # Erased: nothing is due for it any more.
    metrics.profile_stepped(Send(Out.PROFILE, "p_1", Expire()), ProfileStep(delete=True), {}, 3)
    assert [len(s) for s in (rechecks, timers, expiries)] == [0, 0, 0]
    # Erased on request: the mark it leaves is due to be forgotten.
    mark = Erased(T0)
    retention = Retention(anonymous_ms=1_000, erasure_mark_ms=5_000)
    metrics = StepMetrics(Settings(), rechecks, timers, expiries, retention)
    metrics.profile_stepped(Send(Out.PROFILE, "p_1", Expire()), ProfileStep(store=mark), {}, 3)
    assert [len(s) for s in (rechecks, timers, expiries)] == [0, 0, 1]
    assert expiries.pop_due(T0 + 5_000) == [(3, "p_1", T0 + 5_000)]
