"""`check` in relay mode: it proves the ConversationRelay WebSocket opens when signed as Twilio signs it."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_check import PUBLIC, check, findings
from tests.conftest import AUTH_TOKEN, LiveServer
from tests.servers import free_port
from twilio_bridge.config import Settings
from twilio_bridge.testing.standin import RasaStandIn


def relay_bridge(serve: Callable[[Settings], LiveServer], settings: Settings, **changes: object) -> str:
    return serve(dataclasses.replace(settings, voice_mode="relay", **changes)).url


def test_relay_mode_behind_a_proxy_is_reachable(serve: Callable[[Settings], LiveServer], settings: Settings,
                                                standin: RasaStandIn, tmp_path: Path) -> None:
    bridge_url = relay_bridge(serve, settings, public_base_url=PUBLIC)
    done = check(tmp_path, "--bridge", bridge_url, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL=PUBLIC,
                 RASA_WEBHOOK_URL=standin.webhook_url, VOICE_MODE="relay")
    assert done.returncode == 0, done.stdout
    assert findings(done.stdout)["relay"] == ["ok"]
    assert "accepted a WebSocket signed for wss://ivr.example.com/webhook/twilio/relay" in done.stdout


def test_a_relay_websocket_refused_for_its_signature_fails_the_check(
        serve: Callable[[Settings], LiveServer], settings: Settings, standin: RasaStandIn, tmp_path: Path) -> None:
    bridge_url = relay_bridge(serve, settings)
    done = check(tmp_path, "--bridge", bridge_url, TWILIO_AUTH_TOKEN="another-token",
                 RASA_WEBHOOK_URL=standin.webhook_url, VOICE_MODE="relay")
    assert done.returncode == 1
    assert findings(done.stdout)["relay"] == ["fail"]
    assert "HTTP 403: the bridge's TWILIO_AUTH_TOKEN or PUBLIC_BASE_URL differ" in done.stdout


def test_without_a_bridge_the_relay_check_is_skipped_and_plain_ws_is_a_warning(
        serve: Callable[[Settings], LiveServer], settings: Settings, standin: RasaStandIn, tmp_path: Path) -> None:
    common = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": standin.webhook_url, "VOICE_MODE": "relay"}
    nothing = check(tmp_path, "--bridge", f"http://127.0.0.1:{free_port()}", **common)
    assert findings(nothing.stdout)["relay"] == ["skip"]
    local = check(tmp_path, "--bridge", relay_bridge(serve, settings), **common)
    assert findings(local.stdout)["relay"] == ["warn"] and "Twilio connects only to wss://" in local.stdout
