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
from streams.privacy.requests import DEVELOPMENT_SALT, erasure_key, mark_keys, suppression_key
from streams.profiles.model import StoredProfile
from streams.steps.identity import IdentityStep, identity_step
from streams.steps.in_place import Failed, Headers, Holds, InPlace, SendOver
from streams.steps.messages import Claim, Completed, Out, Request, RoutedEvent, Send
from streams.steps.privacy import SUPPRESSED, PrivacyStep, request_step
from streams.steps.process import Rules
from streams.steps.profile import ProfileStep, profile_step

Value = TypeVar("Value")


class Table(Protocol[Value]):
    """A table as the engine uses it: a key's value lives in the partition of its messages."""

    def get(self, key: bytes, partition: int) -> Value | None: ...

    def set(self, key: bytes, value: Value, partition: int) -> None: ...

    def delete(self, key: bytes, partition: int) -> None:
        """Remove the key (a tombstone on a changelog)."""
        ...


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

    def privacy_stepped(self, send: Send, step: PrivacyStep, partition: int) -> None: ...

    def suppressed(self, send: Send, partition: int) -> None:
        """An event carrying a suppressed identifier was dropped."""
        ...

    def dropped_as_erased(self, send: Send, partition: int) -> None:
        """An event of an identifier or profile erased on request since it happened was dropped."""
        ...


class Unobserved:
    def identity_stepped(self, send: Send, step: IdentityStep, partition: int) -> None:
        pass

    def profile_stepped(
        self, send: Send, step: ProfileStep, headers: Headers, partition: int
    ) -> None:
        pass

    def privacy_stepped(self, send: Send, step: PrivacyStep, partition: int) -> None:
        pass

    def suppressed(self, send: Send, partition: int) -> None:
        pass

    def dropped_as_erased(self, send: Send, partition: int) -> None:
        pass


@dataclass
class Engine:
    partitions: int
    rules: Rules
    identities: Table[Owner]
    profiles: Table[StoredProfile]
    observer: Observer = field(default_factory=Unobserved)
    clock: Callable[[], int] = now_ms
    """The profile step's ``now``: the wall clock in the worker, a fixed one in tests."""
    privacy: Table[bytes] = field(default_factory=DictTable)
    """Privacy requests' status and the suppression marks (:mod:`streams.steps.privacy`)."""
    salt: str = DEVELOPMENT_SALT
    """What identifiers are hashed with in the privacy table (``CDP_PRIVACY_SALT``)."""

    def handle(self, send: Send, headers: Headers, partition: int) -> tuple[Send, ...]:
        """Apply an identity or profile message about ``send.key`` in ``partition``; its sends."""
        key = send.key.encode()
        message = send.message
        if send.topic is Out.IDENTITY:
            if isinstance(message, Request | Completed):
                return self._privacy(send, message, partition)
            if isinstance(message, RoutedEvent):
                # One hash for both marks: this runs for every input event.
                suppression, erasure = mark_keys(self.salt, send.key)
                if self.privacy.get(suppression, partition) is not None:
                    self.observer.suppressed(send, partition)
                    return ()
                erased = self.privacy.get(erasure, partition)
                if erased is not None and message.event.occurred_at <= int(erased):
                    self.observer.dropped_as_erased(send, partition)
                    return ()
            owner = self.identities.get(key, partition)
            suppressed = isinstance(message, Claim) and self.suppressed(send.key, partition)
            identity = identity_step(
                owner, send.key, message, self.partitions, suppressed=suppressed
            )
            if identity.store is not None:
                self.identities.set(key, identity.store, partition)
            elif identity.delete:
                self.identities.delete(key, partition)
            if identity.suppress:
                self.privacy.set(suppression_key(self.salt, send.key), SUPPRESSED, partition)
            if identity.erased_at is not None:
                erased = str(identity.erased_at).encode()
                self.privacy.set(erasure_key(self.salt, send.key), erased, partition)
            self.observer.identity_stepped(send, identity, partition)
            return identity.sends
        stored = self.profiles.get(key, partition)
        profile = profile_step(
            stored, send.key, message, self.rules, self.clock(), partitions=self.partitions
        )
        if profile.store is not None:
            self.profiles.set(key, profile.store, partition)
        elif profile.delete:
            self.profiles.delete(key, partition)
        if profile.dropped_as_erased:
            self.observer.dropped_as_erased(send, partition)
        self.observer.profile_stepped(send, profile, headers, partition)
        return profile.sends

    def suppressed(self, identifier: str, partition: int) -> bool:
        """Whether identifier key ``identifier`` (of ``partition``) is suppressed."""
        return self.privacy.get(suppression_key(self.salt, identifier), partition) is not None

    def _privacy(
        self, send: Send, message: Request | Completed, partition: int
    ) -> tuple[Send, ...]:
        key = send.key.encode()
        step = request_step(self.privacy.get(key, partition), message, self.salt, self.clock())
        for written, value in step.writes:
            if value is None:
                self.privacy.delete(written, partition)
            else:
                self.privacy.set(written, value, partition)
        self.observer.privacy_stepped(send, step, partition)
        return step.sends

    def in_place(self, send: SendOver, holds: Holds, failed: Failed) -> InPlace:
        """Messages for the partition being handled handled here; the rest sent with ``send``."""
        return InPlace(self.partitions, self.handle, send, holds, failed)
