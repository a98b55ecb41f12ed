"""A job that keeps crashing is dropped after a few tries: an outbound message's record says it failed, and a
user whose message is dropped unanswered gets the apology."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from tests.conftest import AUTH_TOKEN, LiveServer
from tests.outbound.conftest import TOKEN, Outbound
from tests.servers import wait_for
from tests.whatsapp.test_twiml import APOLOGY
from twilio_bridge.config import Settings
from twilio_bridge.delivery import courier
from twilio_bridge.delivery.sender import MessageSender
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.whatsapp.conversation import Conversation
from twilio_bridge.whatsapp.replies import Outgoing


def test_an_outbound_message_whose_job_is_dropped_after_crashing_is_reported_failed(
        serve: Callable[[Settings], LiveServer], rest_settings: Settings, fake_api: FakeTwilioAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: MessageSender, to: str, from_: str, message: Outgoing, status_callback: str | None = None) -> str:
        raise UnicodeEncodeError("utf-8", message.body, 0, 1, "surrogates not allowed")  # not a SendError: a bug

    monkeypatch.setattr(MessageSender, "send", crash)
    monkeypatch.setattr(courier, "BACKOFF_MAX", 0.2)  # the wait after each crash
    outbound = Outbound(serve(dataclasses.replace(rest_settings, outbound_api_token=TOKEN)).url)
    with capture_logs() as logs:
        queued = outbound.message({"to": "whatsapp:+5215512345678", "body": "Su cita es mañana a las 10."})
        wait_for(lambda: any(e["event"] == "whatsapp.delivery" and e["outcome"] == "dropped" for e in logs))
    report = outbound.get(queued["status_url"]).json()
    assert report["status"] == "failed" and report["error_code"] is None and report["error"]
    assert [e["outcome"] for e in logs if e["event"] == "whatsapp.delivery"] == [
        "crashed"] * (courier.MAX_CRASHES - 1) + ["dropped"]
    assert fake_api.attempts == []


def test_a_users_message_whose_job_is_dropped_after_crashing_gets_the_apology(
        serve: Callable[[Settings], LiveServer], rest_settings: Settings, fake_api: FakeTwilioAPI,
        standin: RasaStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: Conversation, inbound: object, rasa_timeout: float | None = None) -> list[Outgoing]:
        raise RecursionError("a bug, before Rasa is asked")

    monkeypatch.setattr(Conversation, "reply", crash)
    monkeypatch.setattr(courier, "BACKOFF_MAX", 0.2)
    user = WhatsAppUser(serve(rest_settings).url, AUTH_TOKEN, number="+5215512340000")
    with capture_logs() as logs:
        user.send("perdí mi tarjeta")
        assert [m["body"] for m in fake_api.wait_for(1, to=user.address)] == [APOLOGY]
        wait_for(lambda: any(e["event"] == "whatsapp.delivery" and e["outcome"] == "dropped" for e in logs))
    assert [e["outcome"] for e in logs if e["event"] == "whatsapp.delivery"] == [
        "crashed"] * (courier.MAX_CRASHES - 1) + ["dropped"]
    assert standin.received == []
