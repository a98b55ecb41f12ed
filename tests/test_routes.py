"""How a WebSocket route's URL follows from the bridge's http(s) URL."""
from __future__ import annotations

import pytest

from twilio_bridge.routes import RELAY, websocket_url


@pytest.mark.parametrize(("http_url", "ws_url"), [
    ("http://127.0.0.1:5001", "ws://127.0.0.1:5001"),
    ("https://ivr.example.com", "wss://ivr.example.com"),
    (f"https://ivr.example.com{RELAY}?a=http", f"wss://ivr.example.com{RELAY}?a=http"),
])
def test_a_websocket_url_is_its_http_urls_twin(http_url: str, ws_url: str) -> None:
    assert websocket_url(http_url) == ws_url


@pytest.mark.parametrize("not_http", ["ws://ivr.example.com", "httpx://ivr.example.com", "ivr.example.com"])
def test_only_an_http_url_has_a_websocket_twin(not_http: str) -> None:
    with pytest.raises(ValueError):
        websocket_url(not_http)
