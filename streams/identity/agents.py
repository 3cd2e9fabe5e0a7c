"""Identity stage: the Faust shell around :func:`streams.identity.steps.identity_step`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streams.identity.messages import Claim, decode
from streams.identity.resolver import Owner, redacted
from streams.identity.steps import identity_step
from streams.observability import IDENTITY_LINKS, IDENTITY_LINKS_REFUSED
from streams.stages import PendingWrites, consume_in_batches, headers_of, passed_on

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def install(runtime: Runtime) -> None:
    identities = PendingWrites(runtime.identities, Owner.decode, Owner.encode)

    def handle(item: Any) -> None:
        headers = headers_of(item)
        message = decode(item.value, headers)
        key = item.key.decode()
        step = identity_step(identities.get(item.key), key, message)
        for send in step.sends:
            runtime.queue(send, passed_on(headers))
        if step.store is not None:
            identities.set(item.key, step.store, item)
        if step.claim_outcome is not None:
            IDENTITY_LINKS.labels(step.claim_outcome.value).inc()
        if step.refused is not None and isinstance(message, Claim):
            IDENTITY_LINKS_REFUSED.labels(step.refused.value).inc()
            log.info(
                "refused %s to %s: %s (cause %s)",
                redacted(key),
                message.profile_id,
                step.refused.value,
                message.cause.event_id,
            )

    @runtime.app.agent(runtime.identity_topic, name="identity")
    async def identity(stream: Any) -> None:
        await consume_in_batches(runtime, stream, handle, (identities,))
