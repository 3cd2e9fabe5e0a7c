"""Identity stage: the Faust shell around :func:`streams.identity.steps.identity_step`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streams.identity.messages import Claim, decode
from streams.identity.resolver import Owner, redacted
from streams.identity.steps import identity_step
from streams.ingest.agents import RECEIVED_AT_HEADER, dead_letter_on_error, headers_of
from streams.observability import IDENTITY_LINKS, IDENTITY_LINKS_REFUSED

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def passed_on(headers: dict[str, bytes]) -> dict[str, bytes]:
    """The headers a stage passes on with what it sends: the input's append time."""
    received_at = headers.get(RECEIVED_AT_HEADER)
    return {RECEIVED_AT_HEADER: received_at} if received_at else {}


def install(runtime: Runtime) -> None:
    identities = runtime.identities

    async def handle(item: Any) -> None:
        headers = headers_of(item)
        message = decode(item.value, headers)
        stored: bytes | None = identities.get(item.key)
        key = item.key.decode()
        step = identity_step(Owner.decode(stored) if stored is not None else None, key, message)
        for send in step.sends:
            await runtime.send(send, passed_on(headers))
        if step.store is not None:
            identities[item.key] = step.store.encode()
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
        async for item in stream.events():
            await dead_letter_on_error(runtime, item, handle)
