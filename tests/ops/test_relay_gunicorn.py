"""Relay mode as operators run it: the shipped gunicorn.conf.py, the bridge, the Rasa stand-in, and the
ConversationRelay double placing whole calls over real WebSockets."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from tests.conftest import AUTH_TOKEN, HUMAN
from tests.servers import Gunicorn, wait_for
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.relay import RelayCall
from twilio_bridge.testing.standin import ASK_DIGITS, BLOCKED, GREETING, HANDOFF, RasaStandIn

APOLOGY = "Lo siento, tengo un problema técnico."


def relay_env(standin: RasaStandIn, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": standin.webhook_url, "FALLBACK_PHONE_NUMBER": HUMAN,
            "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", "VOICE_MODE": "relay", **extra}


def metric(server: Gunicorn, line_start: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_a_whole_relay_call_through_gunicorn(standin: RasaStandIn, tmp_path: Path) -> None:
    with Gunicorn({**relay_env(standin, tmp_path), "GUNICORN_WORKERS": "2"}, tmp_path) as server:
        call = RelayCall(TwilioPhone(server.url, AUTH_TOKEN))
        assert call.start().text == GREETING
        assert call.say("perdí mi tarjeta").text == ASK_DIGITS
        assert call.press("1234").text.startswith("La tarjeta que termina en 1 2 3 4. ¿La bloqueo?")
        assert call.press("1").text == BLOCKED.replace("\n\n", " ")
        call.interrupt("Listo. Su tarjeta")
        assert call.say("quiero hablar con un asesor").text == HANDOFF
        assert call.ended() == {"reason": "handoff", "why": "assistant", "number": HUMAN, "announced": True}
        assert call.dialed == HUMAN
        assert call.after.dial_result("completed") == [] and call.state == "ended"
        assert call.after.hangup() == 204
        wait_for(lambda: standin.received[-1]["message"] == "/session_end")
        assert [(r["message"], r["metadata"]["input"]) for r in standin.received] == [
            ("/session_start", "call_start"), ("perdí mi tarjeta", "speech"), ("1234", "dtmf"), ("/affirm", "button"),
            ("quiero hablar con un asesor", "speech"), ("/session_end", "call_end")]
        assert standin.received[4]["metadata"]["interrupted"] == {"heard": "Listo. Su tarjeta"}

        assert metric(server, 'twilio_bridge_relay_turns_total{input="dtmf"}') == 1
        assert metric(server, 'twilio_bridge_relay_interrupts_total') == 1
        assert metric(server, 'twilio_bridge_relay_sessions_total{outcome="handoff",why="assistant"}') == 1
        assert metric(server, 'twilio_bridge_relay_sessions_open') == 0


def test_a_reload_hands_relay_calls_in_progress_to_a_person(standin: RasaStandIn, tmp_path: Path) -> None:
    """A WebSocket cannot move to the new workers: after the grace period (half gunicorn's graceful_timeout,
    which RASA_MAX_WAIT_SECONDS=1 makes 3 s) the caller hears an apology and is put through to a person."""
    with Gunicorn(relay_env(standin, tmp_path, RASA_MAX_WAIT_SECONDS="1", RASA_TIMEOUT="1"), tmp_path) as server:
        call = RelayCall(TwilioPhone(server.url, AUTH_TOKEN))
        assert call.start().text == GREETING
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGHUP)
        assert call.reply(timeout=30).text == APOLOGY
        assert call.ended(timeout=30) == {"reason": "handoff", "why": "shutdown", "number": HUMAN}
        assert call.dialed == HUMAN  # the action URL was answered by the new workers
