"""The demo shop's pages (streams.demo.shop), rendered without a browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streams.demo import shop

CONFIG = shop.ShopConfig("wk</script>", "http://127.0.0.1:8088", "http://127.0.0.1:6066")


def config_of(text: str) -> dict[str, object]:
    found = re.search(r'<script id="cdp-config" type="application/json">(.*?)</script>', text)
    assert found is not None
    loaded: dict[str, object] = json.loads(found.group(1))
    return loaded


def test_pages_carry_their_config_safely() -> None:
    status, text = shop.render(CONFIG, "/shop/product/dolls-pram?ref=mail")
    assert status == 200
    assert config_of(text) == {
        "writeKey": "wk</script>",
        "collector": "http://127.0.0.1:8088",
        "api": "http://127.0.0.1:6066",
        "page": {
            "kind": "product",
            "category": "toys",
            "product": "dolls-pram",
            "name": "Doll's pram",
        },
    }
    assert shop.render(CONFIG, "/shop/category/baking")[0] == 200
    assert shop.render(CONFIG, "/shop/category/weapons")[0] == 404
    assert shop.render(CONFIG, "/shop/login")[0] == 200


def test_without_the_bundle_the_page_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shop, "BUNDLE", tmp_path / "absent.js")
    _, text = shop.render(CONFIG, "/shop")
    assert 'id="missing"' in text
    assert "npm run build:shop" in text
    assert "analytics-next.js" not in text
    bundle = tmp_path / "present.js"
    bundle.write_text("window.AnalyticsBrowser = {}")
    monkeypatch.setattr(shop, "BUNDLE", bundle)
    _, text = shop.render(CONFIG, "/shop")
    assert 'id="missing"' not in text
    assert '<script src="/shop/static/analytics-next.js"></script>' in text
