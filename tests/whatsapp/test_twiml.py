"""WhatsApp in TwiML mode (no REST credentials): the replies are <Message>s in the webhook's answer."""
from __future__ import annotations

import dataclasses
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import requests

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.servers import wait_for
from tests.test_text import HOSTILE_SHAPES
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.config import Settings
from twilio_bridge.limits import MESSAGE_CHARACTERS, TWIML_BYTES, TWIML_MESSAGES
from twilio_bridge.state import SqliteStore
from twilio_bridge.testing.standin import (
    ASK_DIGITS,
    BLOCKED,
    FALLBACK,
    GOODBYE,
    HANDOFF,
    HUGE_TEXT,
    NOT_BLOCKED,
    RasaStandIn,
)
from twilio_bridge.text import for_whatsapp, split_message
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.web.signature import sign
from twilio_bridge.whatsapp.replies import Outgoing, messaging_twiml

APOLOGY = ("Lo siento, tengo un problema técnico y no pude responder a su mensaje. Por favor, escríbame de nuevo "
           f"en unos minutos. Para hablar con una persona, llame al {HUMAN}.")


def new_number() -> str:
    """A number of its own for each test: the stand-in serialises each sender, as Rasa does."""
    return "+52155" + "".join(secrets.choice("0123456789") for _ in range(8))


@pytest.fixture
def user(bridge_url: str) -> WhatsAppUser:
    return WhatsAppUser(bridge_url, AUTH_TOKEN, number=new_number())


def bodies(posted) -> list[str]:  # type: ignore[no-untyped-def]
    return [reply.body for reply in posted.replies]


def test_a_message_reaches_rasa_as_the_user_with_its_metadata(user: WhatsAppUser, standin: RasaStandIn) -> None:
    posted = user.send("perdí mi tarjeta")
    assert bodies(posted) == [ASK_DIGITS]
    received = standin.received[-1]
    assert received["sender"] == user.address and received["message"] == "perdí mi tarjeta"
    assert received["metadata"] == {
        "channel": "whatsapp", "message_sid": posted.sid, "from": user.address,
        "to": "whatsapp:+14155238886", "input": "text", "account_sid": "AC" + "0" * 32,
        "profile_name": "Ana", "wa_id": user.number.lstrip("+")}


def test_unsigned_or_forged_webhooks_are_refused(bridge_url: str, standin: RasaStandIn) -> None:
    for path in ("/webhook/twilio/whatsapp", "/webhook/twilio/whatsapp/status"):
        assert requests.post(bridge_url + path, data={"From": "whatsapp:+1555", "Body": "hola"}).status_code == 403
    forged = WhatsAppUser(bridge_url, "not-the-token")
    with pytest.raises(AssertionError, match="HTTP 403"):
        forged.send("hola")
    assert forged.report_status("SM1", "failed", "30008") == 403
    assert standin.received == []


def test_typed_text_never_reaches_rasa_as_a_command(user: WhatsAppUser, standin: RasaStandIn) -> None:
    user.send("/restart")
    user.send("hola", button_payload="/SetSlots(blocked=true)")  # a payload Rasa never offered is just text
    assert [r["message"] for r in standin.received] == ["restart", "hola"]


def test_a_menu_is_numbered_and_the_number_title_or_button_sends_the_payload(user: WhatsAppUser,
                                                                             standin: RasaStandIn) -> None:
    user.send("me robaron la tarjeta")
    assert bodies(user.send("1234")) == ["La tarjeta que termina en 1 2 3 4. ¿La bloqueo?\n\n1. Sí\n2. No"]
    assert bodies(user.send("1")) == [BLOCKED]
    user.send("perdí la tarjeta"), user.send("4321")
    assert bodies(user.send("NO")) == [NOT_BLOCKED]
    user.send("perdí la tarjeta"), user.send("1111")
    user.send("Sí", button_payload="/affirm", button_text="Sí")
    assert [r["message"] for r in standin.received if r["message"].startswith("/")] == ["/affirm", "/deny", "/affirm"]
    assert [r["metadata"]["input"] for r in standin.received if r["message"].startswith("/")] == ["button"] * 3
    assert bodies(user.send("1")) == [FALLBACK]  # the menu is gone once answered: "1" is text again


def test_images_go_out_as_media_and_media_in_reaches_rasa(user: WhatsAppUser, standin: RasaStandIn) -> None:
    posted = user.send("quiero ver la imagen")
    assert [(r.body, r.media) for r in posted.replies] == [("Así se ve su tarjeta.", ()),
                                                          ("", ("https://example.com/card.png",))]
    user.send(media=(("https://api.twilio.com/media/ME1", "image/jpeg"), ("https://api.twilio.com/media/ME2",
                                                                         "audio/ogg")))
    received = standin.received[-1]
    assert received["message"] == "" and received["metadata"]["input"] == "media"
    assert received["metadata"]["media"] == [{"url": "https://api.twilio.com/media/ME1", "content_type": "image/jpeg"},
                                             {"url": "https://api.twilio.com/media/ME2", "content_type": "audio/ogg"}]


def test_markdown_and_control_characters_are_made_whatsapp_safe(user: WhatsAppUser, standin: RasaStandIn) -> None:
    standin.mode = "nasty"
    assert bodies(user.send("hola")) == ['Hola cliente & "amigo"    ✅🚀 *importante* _nota_ enlace (https://x.y) # Título']


def test_a_huge_reply_is_cut_to_what_twilio_sends_from_one_answer(user: WhatsAppUser, standin: RasaStandIn) -> None:
    """100 kB of words: bodies of at most 1600 characters, ten of them in at most 64 kB (check_messaging_answer
    fails on any more), the beginning of the answer in its order. REST mode sends it all (test_rest.py)."""
    standin.mode = "huge"
    texts = bodies(user.send("cuéntame todo"))
    assert len(texts) == TWIML_MESSAGES and all(t.endswith(".") for t in texts)
    assert texts == split_message(for_whatsapp(HUGE_TEXT), MESSAGE_CHARACTERS)[:TWIML_MESSAGES]


def test_an_answer_of_escaped_characters_stays_within_twiml_bytes() -> None:
    """'&' takes five bytes once escaped: ten full bodies of them would be 80 kB."""
    answer = str(messaging_twiml([Outgoing("&" * 1600) for _ in range(TWIML_MESSAGES)]))
    messages = ET.fromstring(answer.encode()).findall("Message")
    assert len(answer.encode()) <= TWIML_BYTES and 1 <= len(messages) < TWIML_MESSAGES
    assert all(message.text == "&" * 1600 for message in messages)  # whole messages, none cut


def test_handoff_gives_the_number_and_hangup_just_the_words(user: WhatsAppUser) -> None:
    assert bodies(user.send("quiero un agente")) == [f"{HANDOFF}\n\nPara hablar con una persona, llame al {HUMAN}."]
    assert bodies(user.send("adiós")) == [GOODBYE]


@pytest.mark.parametrize("mode", ["error500", "html", "invalid_json", "empty", "drop", "hang"])
def test_a_failing_rasa_gets_an_apology_in_time(mode: str, user: WhatsAppUser, standin: RasaStandIn) -> None:
    standin.mode = mode
    assert bodies(user.send("hola")) == [APOLOGY]  # how soon: bench/answer_times.py


def test_the_same_message_twice_reaches_rasa_once_and_gets_the_same_answer(user: WhatsAppUser,
                                                                          standin: RasaStandIn) -> None:
    first = user.send("perdí mi tarjeta")
    again = user.resend(first)
    assert bodies(again) == bodies(first) == [ASK_DIGITS]
    assert len(standin.received) == 1


def test_past_the_rate_limit_one_notice_then_silence(serve: Callable[[Settings], LiveServer], settings: Settings,
                                                    standin: RasaStandIn) -> None:
    server = serve(dataclasses.replace(settings, whatsapp_rate_limit=3))
    user = WhatsAppUser(server.url, AUTH_TOKEN, number=new_number())
    answers = [bodies(user.send(f"hola {n}")) for n in range(5)]
    assert answers[:3] == [[FALLBACK]] * 3
    assert answers[3] == ["Recibí muchos mensajes suyos en poco tiempo. Por favor, espere un minuto antes de "
                          "escribir de nuevo."]
    assert answers[4] == []
    assert len(standin.received) == 3
    other = WhatsAppUser(server.url, AUTH_TOKEN, number=new_number())
    assert bodies(other.send("hola")) == [FALLBACK]  # the limit is per user


def test_sms_and_english(serve: Callable[[Settings], LiveServer], settings: Settings, standin: RasaStandIn) -> None:
    server = serve(dataclasses.replace(settings, voice_language="en-US", fallback_phone_number=None))
    user = WhatsAppUser(server.url, AUTH_TOKEN, number=new_number(), channel="sms")
    standin.mode = "error500"
    assert bodies(user.send("hello")) == ["I'm sorry, I'm having a technical problem and could not answer your "
                                          "message. Please write again in a few minutes."]
    assert standin.received[-1]["sender"] == user.number
    assert standin.received[-1]["metadata"]["channel"] == "sms"


@pytest.mark.parametrize("shape", HOSTILE_SHAPES)
def test_a_100_kb_reply_of_hostile_markup_is_answered_before_twilio_gives_up(
        shape: str, user: WhatsAppUser, standin: RasaStandIn) -> None:
    standin.reply_with([{"text": HOSTILE_SHAPES[shape]}], sender=user.address)
    texts = bodies(user.send("cuéntame todo"))  # TwilioWouldFail past Twilio's 15 s
    assert texts and all(0 < len(t) <= 1600 for t in texts)


def test_a_retry_while_the_first_request_waits_on_rasa_gets_the_reply_its_dead_connection_lost(
        bridge_url: str, user: WhatsAppUser, standin: RasaStandIn) -> None:
    standin.delay = 1.0
    params = user.params("perdí mi tarjeta")
    signed = {"X-Twilio-Signature": sign(AUTH_TOKEN, user.twilio.public(routes.WHATSAPP), params)}
    with pytest.raises(requests.ReadTimeout):  # Twilio's first attempt: its connection dies before the answer
        requests.post(bridge_url + routes.WHATSAPP, data=params, headers=signed, timeout=(2, 0.2))
    wait_for(lambda: standin.received)  # the first request now waits on Rasa
    retry = user.post(params, {"I-Twilio-Idempotency-Token": "retry-1"})
    assert bodies(retry) == [ASK_DIGITS]
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta"]


def test_an_unexpected_error_in_the_first_request_lets_a_retry_answer(
        serve: Callable[[Settings], LiveServer], settings: Settings, tmp_path, standin: RasaStandIn) -> None:  # type: ignore[no-untyped-def]
    class MenulessStore(SqliteStore):
        """Every first read of a user's menu fails, once."""
        failed: set[str] = set()

        def get(self, key: str) -> dict | None:
            if key.startswith("whatsapp:menu:") and key not in self.failed:
                self.failed.add(key)
                raise RuntimeError("disk hiccup")
            return super().get(key)

    server = LiveServer(create_app(settings, store=MenulessStore(tmp_path / "state.db")))
    try:
        user = WhatsAppUser(server.url, AUTH_TOKEN, number=new_number())
        first = user.send("perdí mi tarjeta")
        assert bodies(first) == [APOLOGY]
        assert bodies(user.resend(first)) == [ASK_DIGITS]  # not the apology kept, not 14 s of waiting for it
    finally:
        server.stop()
