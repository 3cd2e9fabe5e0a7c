"""CORS for the configured browser origins (``CDP_CORS_ORIGINS``), on the collector and on
the workers' decision routes: a shop page on its own origin calls both from the browser."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def cors_middleware(origins: list[str], prefixes: tuple[str, ...] = ("/",)) -> Middleware:
    """Allow the ``origins`` (``*``: any) on paths under ``prefixes``; preflights answered
    here. Other origins get no CORS headers, so browsers keep their answers from the page."""
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not request.path.startswith(prefixes):
            return await handler(request)
        permitted = "*" in allowed or origin in allowed
        if request.method == "OPTIONS":
            if not permitted:
                return web.json_response(
                    {"error": "forbidden", "message": "origin not allowed (CDP_CORS_ORIGINS)"},
                    status=403,
                )
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if permitted:
            response.headers.update(cors_headers(origin))
        return response

    return cors
