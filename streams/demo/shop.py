"""The demo shop (``cdp demo``, ``/shop``): a few pages that track with the real analytics.js
(``@segment/analytics-next``, bundled by ``npm run build:shop``) into ``cdp collector`` and ask
a worker's ``/decisions/newsletter-popup`` whether to show the newsletter pop-up.

It runs on its own origin, as a real shop would: the browser calls the collector and the
worker across origins, which ``CDP_CORS_ORIGINS`` allows.
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BUNDLE = Path(__file__).parent / "static" / "analytics-next.js"
MISSING = (
    "The shop's tracking library is missing: analytics.js (@segment/analytics-next) is "
    "bundled from npm when `make install` finds npm (it runs `npm ci` and "
    "`npm run build:shop`). Install Node.js and npm, then run `make install` again."
)


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float


PRODUCTS = (
    Product("stand-mixer", "Stand mixer", "baking", 249.0),
    Product("cake-tin", "Springform cake tin", "baking", 19.5),
    Product("gift-box", "Wrapped gift box", "gifts", 12.0),
    Product("dolls-pram", "Doll's pram", "toys", 59.0),
    Product("wooden-train", "Wooden train set", "toys", 34.0),
)
CATEGORIES = tuple(dict.fromkeys(p.category for p in PRODUCTS))


@dataclass(frozen=True)
class ShopConfig:
    write_key: str
    collector_url: str
    api_url: str


def page(config: ShopConfig, kind: str, title: str, body: str, extra: dict[str, Any]) -> str:
    settings = {
        "writeKey": config.write_key,
        "collector": config.collector_url.rstrip("/"),
        "api": config.api_url.rstrip("/"),
        "page": {"kind": kind, **extra},
    }
    missing = (
        "" if BUNDLE.is_file() else f'<p id="missing" class="missing">{html.escape(MISSING)}</p>'
    )
    script = '<script src="/shop/static/analytics-next.js"></script>' if not missing else ""
    # `</` cannot end the JSON's script element early: json.dumps escapes no slashes.
    data = json.dumps(settings).replace("</", "<\\/")
    return _TEMPLATE.format(
        title=html.escape(title),
        nav=" · ".join(f'<a href="/shop/category/{c}">{c.title()}</a>' for c in CATEGORIES),
        body=body,
        missing=missing,
        script=script,
        config=data,
    )


def render(config: ShopConfig, path: str) -> tuple[int, str]:
    """The page at ``path`` (status, HTML)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts == ["shop"]:
        items = "".join(_card(p) for p in PRODUCTS)
        return 200, page(config, "home", "Home", f"<h1>Welcome</h1><ul>{items}</ul>", {})
    if len(parts) == 3 and parts[1] == "category" and parts[2] in CATEGORIES:
        category = parts[2]
        items = "".join(_card(p) for p in PRODUCTS if p.category == category)
        body = f"<h1>{html.escape(category.title())}</h1><ul>{items}</ul>"
        return 200, page(config, "category", category.title(), body, {"category": category})
    if len(parts) == 3 and parts[1] == "product":
        found = next((p for p in PRODUCTS if p.product_id == parts[2]), None)
        if found is not None:
            body = (
                f"<h1>{html.escape(found.name)}</h1><p>€{found.price:.2f}</p>"
                '<button id="add-to-cart">Add to cart</button>'
            )
            extra = {"category": found.category, "product": found.product_id, "name": found.name}
            return 200, page(config, "product", found.name, body, extra)
    if parts == ["shop", "login"]:
        body = (
            '<h1>Log in</h1><form id="login"><input id="login-email" type="email" required '
            'placeholder="you@example.com"><button type="submit">Log in</button></form>'
        )
        return 200, page(config, "login", "Log in", body, {})
    return 404, page(config, "missing", "Not found", "<h1>No such page</h1>", {})


def _card(product: Product) -> str:
    return (
        f'<li><a href="/shop/product/{product.product_id}">{html.escape(product.name)}</a> '
        f"<small>{product.category}</small></li>"
    )


# str.format template: braces of CSS and JavaScript are doubled.
_TEMPLATE = (Path(__file__).parent / "shop.html").read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    config: ShopConfig

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/shop/static/analytics-next.js":
            if not BUNDLE.is_file():
                self._send(404, "text/plain; charset=utf-8", MISSING.encode())
                return
            self._send(200, "application/javascript", BUNDLE.read_bytes())
            return
        status, text = render(self.config, self.path)
        self._send(status, "text/html; charset=utf-8", text.encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(HTTPStatus(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's terminal is the dashboard's


class ShopServer:
    """The shop on ``host:port``, served from a thread of the demo process."""

    def __init__(self, host: str, port: int, config: ShopConfig) -> None:
        handler = type("ShopHandler", (_Handler,), {"config": config})
        self._server = ThreadingHTTPServer((host, port), handler)
        self.url = f"http://{host}:{port}/shop"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ShopServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
