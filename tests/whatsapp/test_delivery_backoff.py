"""REST mode: each failing streak's backoff starts again at its first step, whatever failed before it."""
from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

from structlog.testing import capture_logs
from werkzeug.wrappers import Request, Response

from tests.conftest import LiveServer
from tests.servers import wait_for
from tests.whatsapp.test_rest import Serve, bodies, chat
from twilio_bridge.config import Settings
from twilio_bridge.delivery.courier import BACKOFF_FIRST
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import ASK_DIGITS, RasaStandIn


def retry_delays(logs: list[dict[str, Any]], reason: str) -> list[float]:
    return [e["delay"] for e in logs if e["event"] == "whatsapp.retry_later" and e["reason"] == reason]


def test_after_rasa_recovers_a_twilio_failure_is_retried_after_the_first_step(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_retry_window=60)).url)
    standin.mode = "error500"
    with capture_logs() as logs:
        user.send("perdí mi tarjeta")
        wait_for(lambda: len(standin.received) >= 3)  # backing off: the next try waits 2 s
        fake_api.fail("429")
        standin.mode = "ok"
        assert bodies(fake_api.wait_for(1, to=user.address)) == [ASK_DIGITS]
    assert retry_delays(logs, "twilio") == [BACKOFF_FIRST]


class ScriptedMessagesAPI:
    """A Messages API that answers each message posted with the next status of its script (429 or 201)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.created: list[str] = []

    @Request.application
    def __call__(self, request: Request) -> Response:
        if not request.path.endswith("/Messages.json"):  # "typing…"
            return Response("{}", content_type="application/json")
        status = self.statuses.pop(0)
        if status == 429:
            error = {"code": 20429, "message": "Too Many Requests", "status": 429}
            return Response(json.dumps(error), status=429, content_type="application/json")
        sid = "SM" + secrets.token_hex(16)
        self.created.append(request.form.get("Body", ""))
        return Response(json.dumps({"sid": sid, "status": "queued"}), status=201, content_type="application/json")


def test_after_one_message_goes_out_a_failure_of_the_next_is_retried_after_the_first_step(
        serve: Serve, rest_settings: Settings) -> None:
    api = ScriptedMessagesAPI([429, 429, 429, 201, 429, 201])  # the reply is two messages: text, then image
    twilio = LiveServer(api)
    try:
        user = chat(serve(dataclasses.replace(rest_settings, twilio_api_base_url=twilio.url)).url)
        with capture_logs() as logs:
            user.send("muéstrame la imagen")
            wait_for(lambda: len(api.created) == 2)
        assert retry_delays(logs, "twilio") == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST, BACKOFF_FIRST]
    finally:
        twilio.stop()
