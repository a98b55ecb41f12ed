"""REST mode: a message Rasa may have acted on is never sent to it again; one it never got is retried."""
from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs
from werkzeug.wrappers import Request, Response

from tests.conftest import LiveServer
from tests.servers import wait_for
from tests.whatsapp.test_rest import Serve, bodies, chat, drained
from tests.whatsapp.test_twiml import APOLOGY
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import ASK_DIGITS, HANDOFF, RasaStandIn
from twilio_bridge.whatsapp import conversation as conversation_module


def test_a_turn_slower_than_rasa_timeout_is_waited_for_not_sent_again(
        rest_url: str, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    user.send("perdí mi tarjeta")
    assert bodies(fake_api.wait_for(1, to=user.address)) == [ASK_DIGITS]
    standin.delay = rest_settings.rasa_timeout + 0.5  # a webhook would have given up on this turn
    user.send("1234")
    wait_for(lambda: len(standin.received) == 2)
    standin.delay = 0.0
    replies = bodies(fake_api.wait_for(2, to=user.address))
    assert replies[1].startswith("La tarjeta que termina en 1 2 3 4.")
    wait_for(lambda: drained(rest_settings))
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta", "1234"]


def test_a_turn_slower_than_the_retry_window_gets_the_apology_and_is_not_sent_again(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    window = 3.0
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_retry_window=window)).url)
    standin.delay = window + 1.5
    user.send("perdí mi tarjeta")
    wait_for(lambda: len(standin.received) == 1)
    standin.delay = 0.0
    user.send("quiero un agente")  # behind the first in the user's lane: a copy of the first would reach Rasa before it
    replies = bodies(fake_api.wait_for(2, to=user.address))
    assert replies[0] == APOLOGY and replies[1].startswith(HANDOFF)
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta", "quiero un agente"]


@pytest.mark.parametrize("mode", ["drop", "invalid_json"])
def test_a_rasa_that_had_the_message_and_gave_no_answer_is_not_asked_again(
        mode: str, serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    """It broke the connection, or answered garbage, after it had the message: it may have run the dialogue, so
    the user gets the apology at once rather than after a retry window of asking again."""
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_retry_window=60)).url)
    standin.mode = mode
    user.send("perdí mi tarjeta")
    assert bodies(fake_api.wait_for(1, to=user.address)) == [APOLOGY]
    wait_for(lambda: drained(rest_settings))
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta"]


def test_a_gateway_timeout_in_front_of_rasa_is_not_sent_again(
        serve: Serve, rest_settings: Settings, fake_api: FakeTwilioAPI) -> None:
    """A 504 from a proxy before Rasa: the proxy stopped waiting, Rasa may still be at work on the message."""
    received: list[str] = []

    @Request.application
    def gateway(request: Request) -> Response:
        received.append(request.get_json()["message"])
        return Response("<html><body>504 Gateway Time-out</body></html>", status=504, content_type="text/html")

    proxy = LiveServer(gateway)
    try:
        settings = dataclasses.replace(rest_settings, whatsapp_retry_window=60,
                                       rasa_webhook_url=proxy.url + "/webhooks/rest/webhook")
        user = chat(serve(settings).url)
        user.send("perdí mi tarjeta")
        assert bodies(fake_api.wait_for(1, to=user.address)) == [APOLOGY]
        wait_for(lambda: drained(rest_settings))
        assert received == ["perdí mi tarjeta"]
    finally:
        proxy.stop()


def test_a_rasa_that_refuses_the_connection_is_retried_until_the_window_ends(
        serve: Serve, rest_settings: Settings, fake_api: FakeTwilioAPI) -> None:
    closed = LiveServer(Response("unused"))
    closed.stop()  # nothing listens there now: Rasa never gets the message, so asking again is safe
    settings = dataclasses.replace(rest_settings, whatsapp_retry_window=2.0,
                                   rasa_webhook_url=closed.url + "/webhooks/rest/webhook")
    user = chat(serve(settings).url)
    with capture_logs() as logs:
        user.send("perdí mi tarjeta")
        assert bodies(fake_api.wait_for(1, to=user.address)) == [APOLOGY]
    retries = [e["reason"] for e in logs if e["event"] == "whatsapp.retry_later"]
    assert len(retries) >= 2 and set(retries) == {"rasa_unreachable"}


@pytest.mark.parametrize("failing, reply", [("forget_last_notification", ASK_DIGITS), ("render_turn", APOLOGY)])
def test_a_failure_after_rasa_answered_never_makes_the_delivery_ask_rasa_again(
        failing: str, reply: str, rest_url: str, rest_settings: Settings, standin: RasaStandIn,
        fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rasa has run the dialogue when its answer comes: the store failing for a moment as the menu is written
    costs the reply nothing, and a reply that fails to render is the apology. A crash would have asked Rasa
    again, running the dialogue twice or three times, then dropped the message."""
    user = chat(rest_url)

    def fail(*_: object) -> None:
        raise ConnectionError(f"{failing} failed")

    monkeypatch.setattr(conversation_module, failing, fail)
    user.send("perdí mi tarjeta")
    assert bodies(fake_api.wait_for(1, to=user.address)) == [reply]
    wait_for(lambda: drained(rest_settings))
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta"]
