"""The state store down (Redis restarting): every voice webhook still gets TwiML, and a call on its way
out is never put through to the person again."""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.servers import redis_server
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.voice import routes as voice_routes

APOLOGY = "Lo siento, tengo un problema técnico."


def test_with_redis_down_every_voice_webhook_answers_twiml(settings, tmp_path) -> None:
    with redis_server(tmp_path) as url:
        server = LiveServer(create_app(dataclasses.replace(settings, state_url=url)))
        phone = TwilioPhone(server.url, AUTH_TOKEN)
        call = phone.call()
        assert call.state == "gathering"
    try:  # redis-server has stopped: every store operation now fails
        call.say("perdí mi tarjeta")  # TwilioWouldFail on a 500
        assert call.heard[0] == APOLOGY and call.state == "dialing" and call.dialed == HUMAN
        assert call.dial_result("no-answer") and call.ended  # goodbye, not another <Dial>
        for route, params in ((routes.VOICE, call.params()), (routes.POLL + "?turn=1&hold=1", call.params()),
                              (routes.FALLBACK, call.params(ErrorCode="11200")),
                              (routes.DIAL_RESULT, call.params(DialCallStatus="failed"))):
            answer = phone.post(phone.public(route), params)
            assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml"), route
            assert ET.fromstring(answer.text).tag == "Response"
        assert call.hangup() == 204
    finally:
        server.stop()


def test_the_error_answer_after_a_dial_says_goodbye_and_hangs_up(settings) -> None:
    app = create_app(settings)
    with app.test_request_context(routes.DIAL_RESULT, method="POST"):
        answer = ET.fromstring(voice_routes._error_answer().get_data(as_text=True))
    assert answer.find("Dial") is None and answer.find("Hangup") is not None
    assert [say.text for say in answer.iter("Say")][0] == APOLOGY
