"""HTTP lookups and decisions, served by every worker and routed to the owner of the key.

Each route is a view class here; :func:`install` binds them to one worker's
:class:`~streams.api.lookups.Lookups` and adds them to its Faust web server.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler
from faust.types import AppT
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import generate_latest

from streams.api.cors import cors_middleware
from streams.api.decisions import newsletter_popup
from streams.api.export import export_document
from streams.api.lookups import FORWARDED_HEADER, Lookups, NotReadyError
from streams.codec import MAX_IDENTIFIER_CHARS
from streams.events import IdentifierKind, identifier_key, now_ms
from streams.journeys.flow import Book, summary
from streams.privacy.requests import (
    InvalidRequestError,
    PrivacyRequest,
    is_request_id,
    new_request,
)
from streams.profiles.model import Profile
from streams.runtime import health
from streams.runtime.context import Runtime
from streams.runtime.metrics import LOOKUP_SECONDS, READY, REGISTRY
from streams.runtime.sender import Deliveries

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# How long POST /privacy/requests waits for its request to be on the topic.
REQUEST_DELIVERY_TIMEOUT_S = 10.0


class BadRequestError(Exception):
    """A request the caller must fix; answered with 400 and the message."""


class UnauthorizedError(Exception):
    """No valid bearer token on a request for personal data; answered with 401."""


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


def forwarded(request: Request) -> bool:
    return FORWARDED_HEADER in request.headers


class Api:
    """What the views of one worker share: its lookups, token, pop-up cooldown, readiness."""

    def __init__(self, runtime: Runtime, broker: health.BrokerProbe) -> None:
        settings = runtime.settings
        secret = settings.api_token
        self.token = secret.get_secret_value() if secret is not None else None
        self.lookups = Lookups(runtime, self.token)
        self.cooldown_ms = int(settings.popup_cooldown_days * DAY_MS)
        self.flows = runtime.rules.flows
        self._app = runtime.app
        self._broker = broker
        self._runtime = runtime
        self.partitions = settings.partitions

    async def put_request(self, request: PrivacyRequest) -> None:
        """Put ``request`` on the privacy-requests topic and wait until it is there."""
        deliveries = Deliveries()
        self._runtime.sender.queue(
            self._runtime.settings.privacy_requests_topic,
            request.identifier.encode(),
            request.to_bytes(),
            deliveries=deliveries,
        )
        deliveries.seal()
        try:
            await asyncio.wait_for(deliveries.done.wait(), REQUEST_DELIVERY_TIMEOUT_S)
        except TimeoutError:
            raise NotReadyError("the request is not on its topic yet; retry shortly") from None

    def authorized(self, authorization: str | None) -> bool:
        return self.token is None or bearer_token_matches(authorization, self.token)

    def readiness(self) -> list[str]:
        """Why the worker cannot make progress now; empty when it is ready."""
        app = self._app
        reasons = health.not_ready_reasons(
            rebalancing=app.rebalancing,
            recovered=app.tables.recovery.completed.is_set(),  # type: ignore[attr-defined]
            assigned=bool(app.consumer.assignment()),
            broker_reachable=self._broker.reachable,
        )
        READY.set(0 if reasons else 1)
        return reasons


class CdpView(View):
    """Turns domain errors into JSON 4xx/5xx answers and times every request."""

    api: ClassVar[Api]
    endpoint = "other"
    # Endpoints answering with personal data require the token when one is configured.
    personal = True
    # Probes and scrapes stay out of cdp_lookup_seconds: the lookup-latency alert is
    # about what websites wait for, and a slow scrape is not a slow lookup.
    timed = True

    async def dispatch(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            if self.personal and not self.api.authorized(request.headers.get("Authorization")):
                raise UnauthorizedError
            return await super().dispatch(request)
        except UnauthorizedError:
            return self.json(
                {"error": "unauthorized", "message": "send Authorization: Bearer <CDP_API_TOKEN>"},
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

    async def profile_named(self, request: Request, profile_id: str) -> Profile | None:
        """The profile a ``/profiles/{profile_id}…`` route names; a malformed id is a 400."""
        if not profile_id.startswith("p_") or len(profile_id) > 64:
            raise BadRequestError("profile ids look like p_<24 hex characters>")
        return await self.api.lookups.profile_by_id(profile_id, forwarded(request))


class ProfileById(CdpView):
    endpoint = "profile_by_id"

    async def get(self, request: Request, profile_id: str) -> Response:
        profile = await self.profile_named(request, profile_id)
        if profile is None:
            return self.not_found(f"no profile {profile_id}")
        return self.json(profile.to_dict())


class ProfileJourneys(CdpView):
    """Where a profile stands in each journey: state, next due time, the latest decisions."""

    endpoint = "profile_journeys"

    async def get(self, request: Request, profile_id: str) -> Response:
        profile = await self.profile_named(request, profile_id)
        if profile is None:
            return self.not_found(f"no profile {profile_id}")
        book = Book.from_dict(profile.journey_flows)
        return self.json({"profile_id": profile_id, **summary(book, self.api.flows)})


class ProfileExport(CdpView):
    """Everything held about the person, as one document (the access right)."""

    endpoint = "profile_export"

    async def get(self, request: Request, profile_id: str) -> Response:
        profile = await self.profile_named(request, profile_id)
        if profile is None:
            return self.not_found(f"no profile {profile_id}")
        return self.json(export_document(profile, self.api.flows, now_ms()))


class ProfileByIdentifier(CdpView):
    endpoint = "profile_by_identifier"

    async def get(self, request: Request) -> Response:
        key = identifier_from_query(request, tuple(IdentifierKind))
        profile = await self.api.lookups.profile_for(key, forwarded(request))
        if profile is None:
            return self.not_found("no profile for that identifier")
        return self.json(profile.to_dict())


class IdentityOwner(CdpView):
    """Internal hop: which profile an identifier belongs to, asked of the key's owner."""

    endpoint = "identity"

    async def get(self, request: Request, key: str) -> Response:
        profile_id = await self.api.lookups.profile_id_for(key, forwarded(request))
        if profile_id is None:
            return self.not_found("unknown identifier")
        return self.json({"profile_id": profile_id})


class NewsletterPopup(CdpView):
    endpoint = "newsletter_popup"

    async def get(self, request: Request) -> Response:
        key = identifier_from_query(request, tuple(IdentifierKind))
        profile = await self.api.lookups.profile_for(key, forwarded(request))
        decision = newsletter_popup(profile, now_ms(), self.api.cooldown_ms)
        return self.json({"show": decision.show, "reason": decision.reason})


class PrivacyRequests(CdpView):
    """Take a privacy request: it goes on the privacy-requests topic, keyed by its identifier."""

    endpoint = "privacy_request"

    async def post(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequestError("the body must be JSON: {type, identifier}") from None
        if not isinstance(body, dict) or not isinstance(body.get("identifier"), str):
            raise BadRequestError(
                'the body must be {"type": "delete", "identifier": "email:ann@example.com"}'
            )
        try:
            taken = new_request(
                str(body.get("type")),
                body["identifier"],
                self.api.partitions,
                uuid.uuid4().hex,
                now_ms(),
            )
        except InvalidRequestError as exc:
            raise BadRequestError(str(exc)) from None
        await self.api.put_request(taken)
        return self.json(
            {"request_id": taken.request_id, "type": taken.type.value, "status": "received"},
            status=202,
        )


class PrivacyRequestStatus(CdpView):
    endpoint = "privacy_request_status"

    async def get(self, request: Request, request_id: str) -> Response:
        if not is_request_id(request_id):
            raise BadRequestError("request ids look like r_<24 hex characters>")
        status = await self.api.lookups.request_status(request_id, forwarded(request))
        if status is None:
            return self.not_found(f"no privacy request {request_id} (yet)")
        return self.json(status)


class Health(CdpView):
    endpoint = "health"
    personal = False
    timed = False

    async def get(self, request: Request) -> Response:
        return self.json({"status": "ok"})


class Ready(CdpView):
    endpoint = "ready"
    personal = False
    timed = False

    async def get(self, request: Request) -> Response:
        reasons = self.api.readiness()
        if not reasons:
            return self.json({"ready": True})
        return self.json({"ready": False, "reasons": reasons}, status=503)


class Metrics(CdpView):
    endpoint = "metrics"
    personal = False
    timed = False

    async def get(self, request: Request) -> Response:
        self.api.readiness()
        # aiohttp takes the charset separately, so the exposition format's bare type goes here.
        return self.bytes(generate_latest(REGISTRY), content_type="text/plain")


ROUTES: dict[str, type[CdpView]] = {
    "/profiles/{profile_id}": ProfileById,
    "/profiles/{profile_id}/journeys": ProfileJourneys,
    "/profiles/{profile_id}/export": ProfileExport,
    "/profiles": ProfileByIdentifier,
    "/identities/{key}": IdentityOwner,
    "/decisions/newsletter-popup": NewsletterPopup,
    "/privacy/requests": PrivacyRequests,
    "/privacy/requests/{request_id}": PrivacyRequestStatus,
    "/health": Health,
    "/ready": Ready,
    "/metrics": Metrics,
}


ERROR_NAMES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors the web server answers itself (an unknown route, a wrong method) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        name = ERROR_NAMES.get(exc.status, "bad_request" if exc.status < 500 else "internal")
        message = f"no route {request.method} {request.path}" if exc.status == 404 else exc.reason
        known = ", ".join(path for path in ROUTES if not path.startswith("/identities"))
        if exc.status == 404:
            message = f"{message}; the routes are {known}"
        return web.json_response({"error": name, "message": message}, status=exc.status)


def install(runtime: Runtime) -> Api:
    """Serve the routes on the worker's web server, bound to its lookups."""
    api = Api(runtime, health.install(runtime))
    app: AppT = runtime.app
    for path, view in ROUTES.items():
        app.page(path)(type(view.__name__, (view,), {"api": api}))
    server = app.web
    assert isinstance(server, AiohttpWeb), "the worker serves its API with Faust's aiohttp driver"
    server.web_app.middlewares.append(json_errors)
    # A shop page asks for decisions from the browser; profiles stay server-to-server.
    server.web_app.middlewares.append(
        cors_middleware(runtime.settings.cors_origins, prefixes=("/decisions/",))
    )
    return api
