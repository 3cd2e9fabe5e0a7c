"""Identity stage: resolve each event to its profile id and keep identifiers linked."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from streams.events import Event
from streams.identity.resolver import LinkOutcome, decide_link, resolve
from streams.ingest.agents import RECEIVED_AT_HEADER
from streams.observability import IDENTITY_LINKS

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)

LINK_FIELD = "link_to"


def header(item: Any, name: str) -> bytes | None:
    """One header of a Faust event; aiokafka hands headers over as pairs, Faust as a dict."""
    headers = item.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == name:
            return bytes(value)
    return None


def install(runtime: Runtime) -> None:
    identities = runtime.identities

    def lookup(key: str) -> str | None:
        owner: bytes | None = identities.get(key.encode())
        return owner.decode() if owner is not None else None

    def apply_link(key: str, request: dict[str, Any]) -> None:
        proposed = request[LINK_FIELD]
        outcome = decide_link(key, lookup(key), proposed)
        IDENTITY_LINKS.labels(outcome.value).inc()
        if outcome in (LinkOutcome.LINKED, LinkOutcome.ADOPTED_ANONYMOUS):
            identities[key.encode()] = proposed.encode()
        elif outcome is LinkOutcome.REFUSED_OWNED:
            log.info(
                "refused to link an identifier owned by another profile (cause %s)",
                request["cause_event_id"],
            )

    @runtime.app.agent(runtime.identity_topic, name="identity")
    async def identity(stream: Any) -> None:
        async for item in stream.events():
            key = item.key.decode()
            raw = json.loads(item.value)
            if LINK_FIELD in raw:
                apply_link(key, raw)
                continue
            event = Event.from_dict(raw)
            resolution = resolve(event, lookup)
            if resolution.claim_routing_key:
                identities[item.key] = resolution.profile_id.encode()
            for linked in resolution.links:
                request = {LINK_FIELD: resolution.profile_id, "cause_event_id": event.event_id}
                await runtime.identity_topic.send(
                    key=linked.encode(), value=json.dumps(request).encode()
                )
            received_at = header(item, RECEIVED_AT_HEADER)
            await runtime.profile_topic.send(
                key=resolution.profile_id.encode(),
                value=item.value,
                headers={RECEIVED_AT_HEADER: received_at or b""},
            )
