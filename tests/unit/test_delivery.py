"""InPlace: what the steps send is handled in its partition when it belongs there."""

from __future__ import annotations

import pytest

from streams.partitioning import key_partition
from streams.steps.in_place import RECEIVED_AT_HEADER, Headers, InPlace
from streams.steps.messages import Out, Send

PARTITIONS = 4


def key_in(partition: int, start: int = 0) -> str:
    return next(
        key
        for n in range(start, 10_000)
        if key_partition((key := f"k{n}").encode(), PARTITIONS) == partition
    )


class Recorder:
    """Handles messages (strings here), each leading to what ``leads_to`` says."""

    def __init__(self, leads_to: dict[str, tuple[Send, ...]], fails: frozenset[str] = frozenset()):
        self.leads_to = leads_to
        self.fails = fails
        self.handled: list[tuple[str, Headers]] = []
        self.sent: list[Send] = []
        self.failed: list[str] = []

    def in_place(self, holds: bool = True) -> InPlace:
        return InPlace(
            PARTITIONS,
            self.handle,
            lambda send, headers: self.sent.append(send),
            lambda topic, partition: holds,
            lambda send, headers, partition, exc: self.failed.append(send.key),
        )

    def handle(self, send: Send, headers: Headers, partition: int) -> tuple[Send, ...]:
        self.handled.append((send.message, headers))
        if send.message in self.fails:
            raise ValueError("a bug")
        return self.leads_to.get(send.message, ())


def test_what_belongs_to_the_partition_is_handled_there_in_the_order_sent() -> None:
    here, near, away = key_in(1), key_in(1, 100), key_in(2)
    first = Send(Out.IDENTITY, here, "event")
    follow = (
        Send(Out.PROFILE, near, "a"),
        Send(Out.IDENTITY, away, "b"),
        Send(Out.SEGMENT_CHANGES, near, "output"),
        Send(Out.IDENTITY, near, "retry", waits_its_turn=True),
        Send(Out.IDENTITY, here, "c"),
    )
    recorder = Recorder({"event": follow})
    recorder.in_place().run(first, {RECEIVED_AT_HEADER: b"1", "other": b"x"}, partition=1)
    assert [message for message, _ in recorder.handled] == ["event", "a", "c"]
    assert recorder.handled[1][1] == {RECEIVED_AT_HEADER: b"1"}  # the append time travels on
    assert [send.message for send in recorder.sent] == ["b", "output", "retry"]


def test_nothing_is_handled_in_place_in_a_partition_not_held() -> None:
    here = key_in(1)
    recorder = Recorder({"event": (Send(Out.PROFILE, here, "a"),)})
    recorder.in_place(holds=False).run(Send(Out.IDENTITY, here, "event"), {}, partition=1)
    assert [send.message for send in recorder.sent] == ["a"]


def test_a_failure_after_the_first_message_is_dead_lettered_and_the_rest_goes_on() -> None:
    here, broken, after = key_in(0), key_in(0, 100), key_in(0, 200)
    follow = (Send(Out.PROFILE, broken, "a"), Send(Out.PROFILE, after, "b"))
    recorder = Recorder({"event": follow}, fails=frozenset({"a"}))
    recorder.in_place().run(Send(Out.IDENTITY, here, "event"), {}, partition=0)
    assert recorder.failed == [broken]
    assert [message for message, _ in recorder.handled] == ["event", "a", "b"]


def test_a_failure_of_the_first_message_is_raised_for_its_stage_to_dead_letter() -> None:
    here = key_in(3)
    recorder = Recorder({}, fails=frozenset({"event"}))
    with pytest.raises(ValueError, match="a bug"):
        recorder.in_place().run(Send(Out.IDENTITY, here, "event"), {}, partition=3)
    assert not recorder.failed
