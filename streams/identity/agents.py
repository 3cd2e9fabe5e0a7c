"""Identity stage: the Faust shell around :func:`streams.identity.steps.identity_step`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from faust.types import Message

from streams.identity.messages import Claim, decode
from streams.identity.resolver import Owner, redacted
from streams.identity.steps import identity_step
from streams.observability import IDENTITY_LINKS, IDENTITY_LINKS_REFUSED
from streams.stages import BatchedStage, PendingWrites, headers_of, key_and_value, passed_on

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)


def install(runtime: Runtime) -> None:
    identities = PendingWrites(runtime.identities, Owner.decode, Owner.encode)

    def handle(record: Message) -> None:
        raw_key, value = key_and_value(record)
        headers = headers_of(record)
        message = decode(value, headers)
        key = raw_key.decode()
        step = identity_step(identities.get(raw_key, record.partition), key, message)
        for send in step.sends:
            runtime.queue(send, passed_on(headers))
        if step.store is not None:
            identities.set(raw_key, step.store, record)
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

    stage = BatchedStage(runtime, [runtime.identity_topic.get_topic_name()], handle, (identities,))

    # The agent subscribes the worker to the topic; the stage takes its messages.
    @runtime.app.agent(runtime.identity_topic, name="identity")
    async def identity(stream: Any) -> None:
        await stage.run()
