"""Identity shell: the identity table around :func:`streams.steps.identity.identity_step`.

:mod:`streams.runtime.pipeline` hands it every message about an identifier in a partition this
worker holds, from the internal identity topic or in place; it is the one writer of the
identity table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from streams.identity.resolver import Owner, redacted
from streams.runtime.metrics import IDENTITY_LINKS, IDENTITY_LINKS_REFUSED
from streams.runtime.pending import PendingWrites
from streams.steps.identity import identity_step
from streams.steps.messages import Claim, InternalMessage, Send

if TYPE_CHECKING:
    from streams.runtime.app import Runtime

log = logging.getLogger(__name__)


class IdentityShell:
    def __init__(self, runtime: Runtime) -> None:
        self.table = PendingWrites(runtime.identities, Owner.decode, Owner.encode)
        self._partitions = runtime.settings.partitions

    def handle(self, identifier: str, message: InternalMessage, partition: int) -> tuple[Send, ...]:
        """Apply ``message`` about ``identifier``, which lives in ``partition``; its sends."""
        key = identifier.encode()
        step = identity_step(self.table.get(key, partition), identifier, message, self._partitions)
        if step.store is not None:
            self.table.set(key, step.store, partition)
        if step.claim_outcome is not None:
            IDENTITY_LINKS.labels(step.claim_outcome.value).inc()
        if step.refused is not None and isinstance(message, Claim):
            IDENTITY_LINKS_REFUSED.labels(step.refused.value).inc()
            log.info(
                "refused %s to %s: %s (cause %s)",
                redacted(identifier),
                message.profile_id,
                step.refused.value,
                message.cause.event_id,
            )
        return step.sends
