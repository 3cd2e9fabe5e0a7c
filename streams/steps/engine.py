"""The one wiring of the identity and profile steps over their two tables.

:class:`Engine` applies a message about a key in a partition: it reads the key's value,
runs the step, writes what the step stores and returns what it sends. Where the values live
is the caller's: the worker puts its RocksDB tables behind it (:mod:`streams.runtime.pipeline`),
the benchmark's in-memory core and the unit tests' cluster put dicts behind it, so all three
run the steps exactly alike. An :class:`Observer` sees every step taken (the worker's metrics
and recheck times, the benchmark's timers); the steps themselves stay pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from streams.events import now_ms
from streams.identity.resolver import Owner
from streams.profiles.model import Forward, Profile
from streams.steps.identity import IdentityStep, identity_step
from streams.steps.in_place import Failed, Headers, Holds, InPlace, SendOver
from streams.steps.messages import Out, Send
from streams.steps.process import Rules
from streams.steps.profile import ProfileStep, profile_step

Value = TypeVar("Value")


class Table(Protocol[Value]):
    """A table as the engine uses it: a key's value lives in the partition of its messages."""

    def get(self, key: bytes, partition: int) -> Value | None: ...

    def set(self, key: bytes, value: Value, partition: int) -> None: ...

    def delete(self, key: bytes, partition: int) -> None: ...


@dataclass
class DictTable(Generic[Value]):
    """A table in one dict, every partition together (one process holds them all)."""

    values: dict[bytes, Value] = field(default_factory=dict)

    def get(self, key: bytes, partition: int) -> Value | None:
        return self.values.get(key)

    def set(self, key: bytes, value: Value, partition: int) -> None:
        self.values[key] = value

    def delete(self, key: bytes, partition: int) -> None:
        self.values.pop(key, None)


class Observer(Protocol):
    """What a shell does beside the steps: count, log, schedule rechecks."""

    def identity_stepped(self, send: Send, step: IdentityStep, partition: int) -> None: ...

    def profile_stepped(
        self, send: Send, step: ProfileStep, headers: Headers, partition: int
    ) -> None: ...


class Unobserved:
    def identity_stepped(self, send: Send, step: IdentityStep, partition: int) -> None:
        pass

    def profile_stepped(
        self, send: Send, step: ProfileStep, headers: Headers, partition: int
    ) -> None:
        pass


@dataclass
class Engine:
    partitions: int
    rules: Rules
    identities: Table[Owner]
    profiles: Table[Profile | Forward]
    observer: Observer = field(default_factory=Unobserved)
    clock: Callable[[], int] = now_ms
    """The profile step's ``now``: the wall clock in the worker, a fixed one in tests."""

    def handle(self, send: Send, headers: Headers, partition: int) -> tuple[Send, ...]:
        """Apply an identity or profile message about ``send.key`` in ``partition``; its sends."""
        key = send.key.encode()
        if send.topic is Out.IDENTITY:
            owner = self.identities.get(key, partition)
            identity = identity_step(owner, send.key, send.message, self.partitions)
            if identity.store is not None:
                self.identities.set(key, identity.store, partition)
            elif identity.erase:
                self.identities.delete(key, partition)
            self.observer.identity_stepped(send, identity, partition)
            return identity.sends
        stored = self.profiles.get(key, partition)
        profile = profile_step(stored, send.key, send.message, self.rules, self.clock())
        if profile.store is not None:
            self.profiles.set(key, profile.store, partition)
        elif profile.erase:
            self.profiles.delete(key, partition)
        self.observer.profile_stepped(send, profile, headers, partition)
        return profile.sends

    def in_place(self, send: SendOver, holds: Holds, failed: Failed) -> InPlace:
        """Messages for the partition being handled handled here; the rest sent with ``send``."""
        return InPlace(self.partitions, self.handle, send, holds, failed)
