"""``cdp collector``: Segment's HTTP Tracking API in front of the input topics.

Stateless: any number run behind a load balancer. Each request's messages are mapped by
:mod:`streams.collector.mapping`, encoded as the worker decodes them (Avro single-object),
keyed by their strongest identifier and produced through one librdkafka producer; the
answer is sent only once Kafka has confirmed every accepted message, so a 200 means the
events are on the topics. The producer's queue is bounded: a request that would not fit
is answered 429 with Retry-After, never queued without limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as MetricCounter

from streams.api.cors import cors_middleware
from streams.codec import Codec
from streams.codec.errors import MAX_TEXT_CHARS, DecodeError
from streams.codec.event_checks import check_text_lengths
from streams.collector.mapping import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    SHORT_ROUTES,
    Mapped,
    MessageType,
    Refused,
    Rejection,
    Rules,
    map_message,
)
from streams.events import EventKind, now_ms
from streams.identity.resolver import routing_key
from streams.partitioning import LIBRDKAFKA_PARTITIONER
from streams.settings import OutputFormat, Settings, compile_category_pattern

log = logging.getLogger(__name__)

SOURCE_HEADER = "cdp-source"
RETRY_AFTER_SECONDS = 1
# Room above the admission bound, so a batch admitted by the check below always fits in
# librdkafka's own queue and produce() never raises BufferError halfway through a request.
_QUEUE_HEADROOM = MAX_BATCH_EVENTS
_DRAIN_BYTES = 8 * MAX_BATCH_BYTES

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = MetricCounter(
    "cdp_collector_requests",
    "Requests answered, by route and HTTP status.",
    ["route", "status"],
    registry=REGISTRY,
)
EVENTS = MetricCounter(
    "cdp_collector_events",
    "Messages received, by Segment type and what became of them (the input kind, or the "
    "reason it was refused).",
    ["type", "outcome"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "cdp_collector_batch_size",
    "Messages per request.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "cdp_collector_request_seconds",
    "Time from a request's arrival to its answer, delivery to Kafka included.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "cdp_collector_producer_queue_messages",
    "Messages in the producer's queue, not yet confirmed by Kafka.",
    registry=REGISTRY,
)
QUEUE_LIMIT = Gauge(
    "cdp_collector_producer_queue_limit_messages",
    "The queue's bound (CDP_COLLECTOR_QUEUE_MESSAGES); at it, requests are answered 429.",
    registry=REGISTRY,
)


class HttpError(Exception):
    """A request answered with an error status and a JSON message."""

    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}


@dataclass(slots=True)
class _Delivery:
    """Counts one request's delivery reports down (on the producer's poll thread)."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    remaining: int
    errors: list[str] = field(default_factory=list)

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.errors.append(error.str())
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class Accepted:
    kind: EventKind
    key: bytes
    value: bytes


class Collector:
    """The write keys, the mapping rules, the codec and the one producer of a collector."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.keys = settings.write_keys
        self.rules = Rules(compile_category_pattern(settings.collector_category_pattern))
        self.codec = Codec(settings.schemas_dir, max_event_bytes=settings.max_event_bytes)
        self.topics = {kind: settings.input_topic(kind) for kind in EventKind}
        self.queue_limit = settings.collector_queue_messages
        self.timeout = settings.collector_delivery_timeout_seconds
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                # Kafka's default partitioner, as the worker and Java clients partition keys.
                "partitioner": LIBRDKAFKA_PARTITIONER,
                "acks": "all",
                "linger.ms": 2,
                "enable.idempotence": False,
                "queue.buffering.max.messages": self.queue_limit + _QUEUE_HEADROOM,
                "message.timeout.ms": int(self.timeout * 1000),
            }
        )
        QUEUE_LIMIT.set(self.queue_limit)
        QUEUE_DEPTH.set_function(lambda: len(self.producer))
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="collector-producer", daemon=True)

    def start(self) -> None:
        self._poller.start()

    def close(self) -> int:
        """Deliver what is queued (bounded by the delivery timeout); the undelivered count."""
        remaining = self.producer.flush(self.timeout)
        self._running = False
        self._poller.join(2)
        return int(remaining)

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.05)

    # -- one request

    def source_of(self, authorization: str | None, body: dict[str, Any] | None) -> str:
        """The source the request's write key names; 401 when it has none or an unknown one."""
        key = None
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise HttpError(401, "unauthorized", "use HTTP Basic auth: the write key as user")
            try:
                key = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                raise HttpError(
                    401, "unauthorized", "the Basic credentials are not base64"
                ) from None
        elif body is not None and isinstance(body.get("writeKey"), str):
            key = body["writeKey"]
        if not key:
            raise HttpError(
                401, "unauthorized", "no write key: send HTTP Basic auth or writeKey in the body"
            )
        source = self.keys.get(key)
        if source is None:
            raise HttpError(401, "unauthorized", "unknown write key")
        return source

    def map_request(
        self, body: dict[str, Any], route: MessageType | None, size: int, source: str
    ) -> tuple[list[Accepted], list[dict[str, Any]]]:
        """The messages to produce and the refused ones, each with its index and reason."""
        received = now_ms()
        if route is None:
            messages = body.get("batch")
            if not isinstance(messages, list):
                raise HttpError(400, "bad_request", "batch must be a list of messages")
            if not messages:
                raise HttpError(400, "bad_request", "batch is empty")
            if len(messages) > MAX_BATCH_EVENTS:
                raise HttpError(
                    400,
                    "bad_request",
                    f"batch of {len(messages)} messages exceeds the limit of {MAX_BATCH_EVENTS}",
                )
            sent_at = body.get("sentAt") if isinstance(body.get("sentAt"), str) else None
            context = body.get("context") if isinstance(body.get("context"), dict) else None
            sizes = [len(orjson.dumps(m)) for m in messages]
        else:
            messages, sent_at, context, sizes = [body], None, None, [size]
        BATCH_SIZE.observe(len(messages))
        accepted: list[Accepted] = []
        refused: list[dict[str, Any]] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        for index, (raw, encoded_size) in enumerate(zip(messages, sizes, strict=True)):
            result = map_message(
                raw,
                received_at=received,
                route_type=route,
                batch_sent_at=sent_at,
                batch_context=context,
                encoded_size=encoded_size,
                source=source,
                rules=self.rules,
            )
            message_type = _type_label(raw, route)
            if isinstance(result, Mapped):
                try:
                    # What the worker would dead-letter is refused here, where the sender
                    # learns of it. A message shorter than the text limit holds no longer text.
                    if encoded_size > MAX_TEXT_CHARS:
                        check_text_lengths(result.event.event_id, "messageId")
                        check_text_lengths(result.event.body, "")
                    value = self.codec.encode_event(result.event, OutputFormat.AVRO)
                except DecodeError as exc:
                    result = Refused(Rejection.INVALID_FIELD, exc.detail[:300])
                except ValueError as exc:
                    result = Refused(Rejection.INVALID_FIELD, str(exc)[:300])
                else:
                    outcomes[message_type, result.outcome] += 1
                    accepted.append(
                        Accepted(result.event.kind, routing_key(result.event).encode(), value)
                    )
                    continue
            outcomes[message_type, result.reason.value] += 1
            message_id = raw.get("messageId") if isinstance(raw, dict) else None
            refused.append(
                {
                    "index": index,
                    "messageId": message_id if isinstance(message_id, str) else None,
                    "reason": result.reason.value,
                    "message": result.message,
                }
            )
        for labels, count in outcomes.items():
            EVENTS.labels(*labels).inc(count)
        return accepted, refused

    async def produce(self, accepted: list[Accepted], source: str) -> None:
        """Produce and wait until Kafka confirmed every message; 429 when the queue is full."""
        if not accepted:
            return
        if len(self.producer) + len(accepted) > self.queue_limit:
            raise HttpError(
                429,
                "queue_full",
                "the collector's queue to Kafka is full; retry later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        loop = asyncio.get_running_loop()
        delivery = _Delivery(loop, loop.create_future(), len(accepted))
        headers: list[tuple[str, str | bytes | None]] = [(SOURCE_HEADER, source.encode())]
        produce = self.producer.produce
        for item in accepted:
            produce(
                self.topics[item.kind],
                value=item.value,
                key=item.key,
                headers=headers,
                on_delivery=delivery,
            )
        try:
            # librdkafka reports every message by message.timeout.ms; this is a backstop.
            async with asyncio.timeout(self.timeout + 5):
                await delivery.future
        except TimeoutError:
            raise HttpError(
                503,
                "kafka_unavailable",
                "Kafka did not confirm the events in time; retry",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        if delivery.errors:
            log.warning("delivery failed: %s", delivery.errors[0])
            raise HttpError(
                503,
                "kafka_unavailable",
                f"Kafka refused {len(delivery.errors)} of {len(accepted)} events; retry",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )


def _type_label(raw: Any, route: MessageType | None) -> str:
    given = raw.get("type") if isinstance(raw, dict) else None
    name = given if isinstance(given, str) else (route.value if route else None)
    return name if name in _TYPES else "unknown"


_TYPES = frozenset(t.value for t in MessageType)


async def read_body(request: web.Request) -> bytes:
    """The body, gunzipped when sent gzipped, at most Segment's 500 KB either way.

    aiohttp's own decompression is off (see :func:`run`): a bad gzip body surfaced as an
    unhandled exception in its log, and inflating here bounds the inflated size too.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            # Read on (bounded) before answering: a client still sending when the
            # connection closes sees a reset instead of the answer.
            if size <= _DRAIN_BYTES:
                continue
            break
        chunks.append(chunk)
    if size > MAX_BATCH_BYTES:
        raise _too_large()
    raw = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding != "gzip":
        raise HttpError(400, "bad_request", f"Content-Encoding {encoding[:20]!r}: send gzip")
    inflater = zlib.decompressobj(wbits=31)
    try:
        inflated = inflater.decompress(raw, MAX_BATCH_BYTES + 1)
    except zlib.error:
        raise HttpError(400, "bad_request", "cannot read the body: not valid gzip") from None
    if len(inflated) > MAX_BATCH_BYTES:
        raise _too_large()
    if not inflater.eof:
        raise HttpError(400, "bad_request", "cannot read the body: the gzip stream is cut short")
    return inflated


def _too_large() -> HttpError:
    return HttpError(
        400, "too_large", f"the body exceeds the limit of {MAX_BATCH_BYTES} bytes (500 KB)"
    )


def route_types() -> dict[str, MessageType | None]:
    """Path -> the message type it implies (None: a batch)."""
    routes: dict[str, MessageType | None] = {f"/v1/{t.value}": t for t in MessageType}
    routes.update({f"/v1/{short}": t for short, t in SHORT_ROUTES.items()})
    routes.update({"/v1/batch": None, "/v1/import": None, "/v1/b": None})
    return routes


ROUTE_TYPES = route_types()


def make_handler(collector: Collector) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        route = ROUTE_TYPES[request.path]
        name = "batch" if route is None else route.value
        started = time.perf_counter()
        status = 500
        try:
            response = await _handle(collector, request, route)
        except HttpError as exc:
            response = web.json_response(
                {"success": False, "error": exc.error, "message": exc.message},
                status=exc.status,
                headers=exc.headers,
            )
        except Exception:
            log.exception("collector request failed")
            response = web.json_response(
                {"success": False, "error": "internal", "message": "see the collector log"},
                status=500,
            )
        status = response.status
        REQUESTS.labels(name, str(status)).inc()
        REQUEST_SECONDS.labels(name).observe(time.perf_counter() - started)
        return response

    return handle


async def _handle(
    collector: Collector, request: web.Request, route: MessageType | None
) -> web.Response:
    authorization = request.headers.get("Authorization")
    if authorization:
        source = collector.source_of(authorization, None)  # 401 before reading a body
    raw = await read_body(request)
    if not raw:
        raise HttpError(400, "bad_request", "the body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", f"the body is not JSON: {exc}"[:200]) from None
    if not isinstance(body, dict):
        raise HttpError(400, "bad_request", "the body must be a JSON object")
    if not authorization:
        source = collector.source_of(None, body)
    accepted, refused = collector.map_request(body, route, len(raw), source)
    if route is not None and refused:
        error = refused[0]
        raise HttpError(400, error["reason"], error["message"])
    if route is None and not accepted:
        return web.json_response(
            {
                "success": False,
                "error": "all_refused",
                "message": "no message of the batch was accepted",
                "accepted": 0,
                "errors": refused,
            },
            status=400,
        )
    await collector.produce(accepted, source)
    answer: dict[str, Any] = {"success": True}
    if route is None:
        answer.update(accepted=len(accepted), errors=refused)
    return web.json_response(answer)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The server's own errors (unknown route, wrong method) as JSON, like every answer."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path}; POST to /v1/track, /v1/batch, …"
        REQUESTS.labels("other", str(exc.status)).inc()
        return web.json_response(
            {
                "success": False,
                "error": "bad_request" if exc.status < 500 else "internal",
                "message": message,
            },
            status=exc.status,
        )


def create_app(collector: Collector) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, cors_middleware(collector.settings.cors_origins)],
        # The handler reads the body itself, bounded; this only stops aiohttp refusing first.
        client_max_size=MAX_BATCH_BYTES * 4,
    )
    handle = make_handler(collector)
    for path in ROUTE_TYPES:
        app.router.add_post(path, handle)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), content_type="text/plain")

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)

    async def start(_app: web.Application) -> None:
        collector.start()
        # As in the worker (streams/runtime/gc_tuning.py): what starting made lives as long
        # as the process, and full collections need not walk it with the loop stopped.
        gc.collect()
        gc.freeze()

    async def stop(_app: web.Application) -> None:
        undelivered = collector.close()
        if undelivered:
            log.error("%d events undelivered at shutdown", undelivered)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def run(settings: Settings, bootstrap: str) -> None:
    """Serve until SIGINT or SIGTERM; queued events are delivered before the exit."""
    import uvloop

    collector = Collector(settings, bootstrap)
    web.run_app(
        create_app(collector),
        loop=uvloop.new_event_loop(),
        host=settings.collector_host,
        port=settings.collector_port,
        access_log=None,
        print=None,
        auto_decompress=False,
    )
