"""HTTP lookups and decisions, served by every worker and routed to the owner of the key."""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from streams import health
from streams.api.decisions import newsletter_popup
from streams.codec import MAX_IDENTIFIER_CHARS, now_ms
from streams.events import IdentifierKind, identifier_key
from streams.identity.resolver import Owner
from streams.observability import LOOKUP_SECONDS, READY, REGISTRY
from streams.partitioning import key_partition
from streams.pending import partition_reader
from streams.profiles.model import Profile, load_stored

if TYPE_CHECKING:
    from streams.app import Runtime

log = logging.getLogger(__name__)

# Merges chain (anonymous -> email -> user id profile); longer chains mean a merge in flight.
MAX_FORWARDS = 8
# Marks a lookup one worker passed on to the key's owner. The owner answers it itself: while
# ownership moves, two workers could otherwise pass a lookup back and forth without end.
FORWARDED_HEADER = "X-Cdp-Forwarded"
FORWARD_TIMEOUT_S = 3.0
DAY_MS = 86_400_000


class BadRequestError(Exception):
    """A request the caller must fix; answered with 400 and the message."""


class UnauthorizedError(Exception):
    """No valid bearer token on a request for personal data; answered with 401."""


class NotReadyError(Exception):
    """The worker does not (yet) know who owns the key; answered with 503."""


def identifier_from_query(request: Request, allowed: tuple[IdentifierKind, ...]) -> str:
    """The one identifier a lookup names, as an identity-table key."""
    given = [(kind, request.query[kind.value]) for kind in allowed if kind.value in request.query]
    names = ", ".join(kind.value for kind in allowed)
    if len(given) != 1:
        raise BadRequestError(f"give exactly one of: {names}")
    kind, value = given[0]
    value = value.strip()
    if not value or len(value) > MAX_IDENTIFIER_CHARS:
        raise BadRequestError(f"{kind.value} must be 1 to {MAX_IDENTIFIER_CHARS} characters")
    if kind is IdentifierKind.EMAIL:
        value = value.lower()
    return identifier_key(kind, value)


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def install(runtime: Runtime) -> None:
    app = runtime.app
    cooldown_ms = int(runtime.settings.popup_cooldown_days * DAY_MS)
    secret = runtime.settings.api_token
    token = secret.get_secret_value() if secret is not None else None
    # Hops to the worker owning a key carry the token like any other caller.
    hop_headers = {FORWARDED_HEADER: "1"}
    if token:
        hop_headers["Authorization"] = f"Bearer {token}"
    hop_timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
    # Straight from the key's partition database: Faust's ``get`` asks every database of
    # the table in turn for a key it has not seen, a third of a decision's time.
    read_profile = partition_reader(runtime.profiles)
    read_identity = partition_reader(runtime.identities)
    partitions = runtime.settings.partitions

    def authorized(authorization: str | None) -> bool:
        return token is None or bearer_token_matches(authorization, token)

    def locate(table: Any, key: bytes, forwarded: bool) -> int | str:
        """The partition of ``key`` in ``table`` when this worker owns it, else the base URL
        of the worker that does."""
        partition = key_partition(key, partitions)
        # Owned here, the common case, without Faust's router: it hashes the key again with
        # aiokafka's slower murmur2 and builds a URL object to compare.
        if app.assignor.is_active(TP(table.changelog_topic_name, partition)):
            return partition
        try:
            url = app.router.key_store(table.name, key)
        except KeyError as exc:
            raise NotReadyError("partition ownership is not known yet; retry shortly") from exc
        own = app.conf.canonical_url
        if (url.host, url.port) == (own.host, own.port):
            return partition
        if forwarded:
            raise NotReadyError("the key's partition is moving between workers; retry shortly")
        return str(url).rstrip("/")

    async def fetch_remote(url: str) -> tuple[int, Any]:
        """(status, body) of ``url`` on the worker owning a key; 200 and 404 are answers."""
        try:
            async with app.http_client.get(
                url, headers=hop_headers, timeout=hop_timeout
            ) as response:
                status, body = response.status, await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NotReadyError("the key's owner did not answer; retry shortly") from exc
        if status not in (200, 404):
            raise NotReadyError(f"the worker owning the key answered {status}; retry shortly")
        return status, body

    async def profile_by_id(profile_id: str, forwarded: bool) -> Profile | None:
        """The profile from its owner, local or remote; None when there is none.

        A profile merged into another answers with the one it was merged into. A forwarded
        lookup is answered here for the profile it names, and may be passed on once more
        for the profile that one was merged into.
        """
        for hop in range(MAX_FORWARDS):
            key = profile_id.encode()
            owner = locate(runtime.profiles, key, forwarded and hop == 0)
            if isinstance(owner, str):
                status, body = await fetch_remote(f"{owner}/profiles/{profile_id}")
                return Profile.from_dict(body) if status == 200 else None
            stored = read_profile(key, owner)
            if stored is None:
                return None
            found = load_stored(stored)
            if isinstance(found, Profile):
                return found
            profile_id = found.into
        raise NotReadyError("the profile is being merged; retry shortly")

    async def profile_id_for(key: str, forwarded: bool) -> str | None:
        encoded = key.encode()
        owner = locate(runtime.identities, encoded, forwarded)
        if isinstance(owner, str):
            status, body = await fetch_remote(f"{owner}/identities/{key}")
            return str(body["profile_id"]) if status == 200 else None
        stored = read_identity(encoded, owner)
        return Owner.decode(stored).profile_id if stored is not None else None

    async def profile_for(key: str, forwarded: bool) -> Profile | None:
        profile_id = await profile_id_for(key, forwarded)
        if profile_id is None:
            return None
        return await profile_by_id(profile_id, forwarded)

    def forwarded(request: Request) -> bool:
        return FORWARDED_HEADER in request.headers

    class CdpView(View):
        """Turns domain errors into JSON 4xx/5xx answers and times every request."""

        endpoint = "other"
        # Endpoints answering with personal data require the token when one is configured.
        personal = True
        # Probes and scrapes stay out of cdp_lookup_seconds: the lookup-latency alert is
        # about what websites wait for, and a slow scrape is not a slow lookup.
        timed = True

        async def dispatch(self, request: Any) -> Any:
            started = time.perf_counter()
            try:
                if self.personal and not authorized(request.headers.get("Authorization")):
                    raise UnauthorizedError
                return await super().dispatch(request)
            except UnauthorizedError:
                return self.json(
                    {
                        "error": "unauthorized",
                        "message": "send Authorization: Bearer <CDP_API_TOKEN>",
                    },
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="cdp-streams"'},
                )
            except BadRequestError as exc:
                return self.json({"error": "bad_request", "message": str(exc)}, status=400)
            except NotReadyError as exc:
                return self.json({"error": "not_ready", "message": str(exc)}, status=503)
            except Exception:
                # Callers get a message, never a traceback; the log keeps the details.
                log.exception("lookup failed")
                return self.json(
                    {"error": "internal", "message": "the lookup failed; see the worker log"},
                    status=500,
                )
            finally:
                if self.timed:
                    LOOKUP_SECONDS.labels(self.endpoint).observe(time.perf_counter() - started)

        def not_found(self, message: str) -> Response:
            return self.json({"error": "not_found", "message": message}, status=404)

    @app.page("/profiles/{profile_id}")
    class ProfileById(CdpView):
        endpoint = "profile_by_id"

        async def get(self, request: Request, profile_id: str) -> Response:
            if not profile_id.startswith("p_") or len(profile_id) > 64:
                raise BadRequestError("profile ids look like p_<24 hex characters>")
            profile = await profile_by_id(profile_id, forwarded(request))
            if profile is None:
                return self.not_found(f"no profile {profile_id}")
            return self.json(profile.to_dict())

    @app.page("/profiles")
    class ProfileByIdentifier(CdpView):
        endpoint = "profile_by_identifier"

        async def get(self, request: Request) -> Response:
            key = identifier_from_query(request, tuple(IdentifierKind))
            profile = await profile_for(key, forwarded(request))
            if profile is None:
                return self.not_found("no profile for that identifier")
            return self.json(profile.to_dict())

    @app.page("/identities/{key}")
    class IdentityOwner(CdpView):
        """Internal hop: which profile an identifier belongs to, asked of the key's owner."""

        endpoint = "identity"

        async def get(self, request: Request, key: str) -> Response:
            profile_id = await profile_id_for(key, forwarded(request))
            if profile_id is None:
                return self.not_found("unknown identifier")
            return self.json({"profile_id": profile_id})

    @app.page("/decisions/newsletter-popup")
    class NewsletterPopup(CdpView):
        endpoint = "newsletter_popup"

        async def get(self, request: Request) -> Response:
            key = identifier_from_query(request, tuple(IdentifierKind))
            profile = await profile_for(key, forwarded(request))
            decision = newsletter_popup(profile, now_ms(), cooldown_ms)
            return self.json({"show": decision.show, "reason": decision.reason})

    broker = health.install(runtime)

    def readiness() -> list[str]:
        """Why the worker cannot make progress now; empty when it is ready."""
        reasons = health.not_ready_reasons(
            rebalancing=app.rebalancing,
            recovered=app.tables.recovery.completed.is_set(),  # type: ignore[attr-defined]
            assigned=bool(app.consumer.assignment()),
            broker_reachable=broker.reachable,
        )
        READY.set(0 if reasons else 1)
        return reasons

    @app.page("/health")
    class Health(CdpView):
        endpoint = "health"
        personal = False
        timed = False

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/ready")
    class Ready(CdpView):
        endpoint = "ready"
        personal = False
        timed = False

        async def get(self, request: Request) -> Response:
            reasons = readiness()
            if not reasons:
                return self.json({"ready": True})
            return self.json({"ready": False, "reasons": reasons}, status=503)

    @app.page("/metrics")
    class Metrics(CdpView):
        endpoint = "metrics"
        personal = False
        timed = False

        async def get(self, request: Request) -> Response:
            readiness()
            # aiohttp takes the charset separately, so the exposition format's bare type goes here.
            return self.bytes(generate_latest(REGISTRY), content_type="text/plain")
