"""The card alert the business starts, through the outbound API of the bridge under gunicorn, to real Rasa 3.6 and
the real action server: an outbound call answered as Twilio would post it, and a WhatsApp template answered in REST
mode. The demo card store is the session's: the tests here leave the card ending in 1234 blocked, as they found it
after test_real_calls."""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.servers import free_port, gunicorn_bridge, wait_for
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen, template_buttons
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

from .conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM, Assistant
from .test_real_calls import ANYTHING_ELSE, GOODBYE, GREETING, YES_NO_MENU
from .test_real_whatsapp import new_user

TOKEN = "outbound-token-0123456789abcdef"
VOICE_FROM = "+14155550199"
CUSTOMER = "+5215598765432"
ALERT = {"reason": "suspicious_charge", "card_last_four": "1234", "merchant": "Tienda Ejemplo"}
SPOKEN_ALERT = ("Le llamamos de su banco por su tarjeta que termina en 1 2 3 4. La bloqueamos por un cargo que "
                "parece sospechoso. ¿Usted hizo ese cargo?")
UNBLOCKED = "Gracias por confirmarlo. Desbloqueé la tarjeta que termina en 1 2 3 4. Ya puede usarla."
KEPT_BLOCKED = "Entendido. La tarjeta que termina en 1 2 3 4 sigue bloqueada. ¿Le enviamos una tarjeta nueva?"
NEW_CARD = r"Listo\. Pedí una tarjeta nueva\. Su número de referencia es \d \d \d \d, \d \d \d \d\."


@dataclass
class OutboundBridge:
    url: str
    api: FakeTwilioAPI

    def post(self, path: str, payload: dict) -> dict:
        answer = requests.post(self.url + path, json=payload, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 202, answer.text
        return answer.json()

    def answer_call(self, context: dict) -> PhoneCall:
        placed = self.post("/api/outbound/calls", {"to": CUSTOMER, "context": context})
        [call] = [call for call in self.api.calls if call["sid"] == placed["call_sid"]]
        return TwilioPhone(self.url, AUTH_TOKEN).answer(call["sid"], VOICE_FROM, CUSTOMER, call["status_callback"])


@pytest.fixture(scope="module")
def outbound_bridge(assistant: Assistant, fake_api: FakeTwilioAPI,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[OutboundBridge]:
    port = free_port()
    settings = {"RASA_WEBHOOK_URL": assistant.webhook_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "FALLBACK_PHONE_NUMBER": HUMAN, "TWILIO_ACCOUNT_SID": fake_api.account_sid,
                "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM, "TWILIO_API_BASE_URL": fake_api.base_url,
                "OUTBOUND_API_TOKEN": TOKEN, "TWILIO_VOICE_FROM": VOICE_FROM,
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with gunicorn_bridge(tmp_path_factory.mktemp("outbound-bridge"), settings, port=port) as url:
        yield OutboundBridge(url, fake_api)


def test_the_customer_answers_the_alert_call_yes_and_the_card_is_unblocked(outbound_bridge: OutboundBridge) -> None:
    call = outbound_bridge.answer_call(ALERT)
    assert call.heard == [SPOKEN_ALERT, YES_NO_MENU]
    assert call.say("sí, fui yo") == [UNBLOCKED, ANYTHING_ELSE]
    assert call.say("no, gracias") == [GOODBYE]
    assert call.hangup() == 204


def test_the_customer_did_not_make_the_charge_and_gets_a_new_card(outbound_bridge: OutboundBridge) -> None:
    call = outbound_bridge.answer_call(ALERT)
    assert call.press("2") == [KEPT_BLOCKED, YES_NO_MENU]
    ordered, anything_else = call.press("1")
    assert re.fullmatch(NEW_CARD, ordered) and anything_else == ANYTHING_ELSE
    assert call.hangup() == 204


def test_a_call_without_an_alert_is_greeted_as_usual(outbound_bridge: OutboundBridge) -> None:
    call = outbound_bridge.answer_call({"reason": "appointment_reminder", "when": "mañana"})
    assert call.heard == [GREETING]
    call.hangup()


def test_a_whatsapp_user_answers_the_template_in_a_chat_under_way(outbound_bridge: OutboundBridge) -> None:
    user: WhatsAppUser = new_user(outbound_bridge.url)
    replies = outbound_bridge.api
    user.send("hola")
    assert [m["body"] for m in replies.wait_for(1, to=user.address, timeout=30)] == [GREETING]
    queued = outbound_bridge.post("/api/outbound/messages", {"to": user.address, "content_sid": "HX" + "c" * 32,
                                                            "variables": {"1": "1234"}, "context": ALERT})
    wait_for(lambda: len(replies.sent_to(user.address)) == 2, 30)
    assert replies.sent_to(user.address)[-1]["content_sid"] == "HX" + "c" * 32 and queued["status"] == "queued"
    user.send("no fui yo")
    offer = replies.wait_for(3, to=user.address, timeout=30)[-1]  # a quick reply (WHATSAPP_BUTTONS=interactive)
    assert as_seen(offer) == f"{KEPT_BLOCKED}\n[Sí] [No]"
    yes, _ = template_buttons(offer)
    user.send("Sí", button_payload=yes[0], button_text="Sí")
    ordered = replies.wait_for(4, to=user.address, timeout=30)[-1]["body"]
    assert re.fullmatch(rf"{NEW_CARD}\n\n¿Algo más\?", ordered), ordered
