"""The whole product as operators run it: gunicorn, the bridge, the Rasa stand-in, a call placed by the phone."""
from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.conftest import AUTH_TOKEN, HUMAN
from tests.servers import GUNICORN, ROOT, Gunicorn
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn


def test_a_whole_call_through_gunicorn(standin: RasaStandIn, tmp_path: Path) -> None:
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": standin.webhook_url,
           "FALLBACK_PHONE_NUMBER": HUMAN, "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    with Gunicorn({**env, "GUNICORN_WORKERS": "2"}, tmp_path) as server:
        phone = TwilioPhone(server.url, AUTH_TOKEN)
        call = phone.call()
        assert call.heard == ["Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"]
        call.say("perdí mi tarjeta")
        assert call.gather["numDigits"] == "4"
        call.press("1234")
        assert call.heard[0] == "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"
        call.say("sí")
        assert call.heard[0].startswith("Listo. Su tarjeta está bloqueada.")
        call.say("no, gracias")
        assert call.heard == ["Gracias por llamar. Hasta luego."] and call.ended
        assert call.hangup() == 204
        assert [r["message"] for r in standin.received] == [
            "/session_start", "perdí mi tarjeta", "1234", "/affirm", "no, gracias", "/session_end"]

        health = requests.get(server.url + "/health", timeout=5).json()
        assert health["status"] == "ok" and health["rasa"]["version"] == "Hello from Rasa: 3.21.0"
        assert AUTH_TOKEN not in repr(health)


def test_gunicorn_refuses_to_start_without_a_token(standin: RasaStandIn, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "twilio_voice_server:app"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PORT": "1"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "twilio-bridge: configuration error: TWILIO_AUTH_TOKEN: required" in result.stderr
