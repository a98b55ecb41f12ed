"""WhatsApp chats through the bridge under gunicorn to real Rasa 3.6: replies in the webhook's TwiML, and
through the (fake) Messages API in REST mode."""
from __future__ import annotations

import re
import secrets
from concurrent.futures import ThreadPoolExecutor

from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.whatsapp_user import Posted, WhatsAppUser

from .conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM
from .test_real_calls import GREETING, REFERENCE

ASK_DIGITS = "Escríbame los últimos cuatro dígitos de la tarjeta."
CALL_A_PERSON = f"Para hablar con una persona, llame al {HUMAN}."


def new_user(bridge: str) -> WhatsAppUser:
    return WhatsAppUser(bridge, AUTH_TOKEN, number="+52155" + str(secrets.randbelow(10**8)).zfill(8))


def texts(posted: Posted) -> list[str]:
    return [reply.body for reply in posted.replies]


def test_a_whatsapp_user_blocks_a_card_in_their_own_words(bridge: str) -> None:
    user = new_user(bridge)
    assert texts(user.send("hola")) == [GREETING]
    assert texts(user.send("se me perdió la tarjeta")) == [ASK_DIGITS]
    assert texts(user.send("cuatro mil trescientos veintiuno")) == [
        "La tarjeta que termina en 4 3 2 1. ¿La bloqueo?\n\n1. Sí\n2. No"]
    (blocked,) = texts(user.send("1"))
    assert re.fullmatch(rf"Listo\. Bloqueé la tarjeta que termina en 4 3 2 1\. {REFERENCE}\n\n¿Algo más\?", blocked)
    assert texts(user.send("pásame con alguien")) == [f"Con gusto.\n\n{CALL_A_PERSON}"]


def test_digits_a_whatsapp_user_cannot_give_are_asked_for_in_writing(bridge: str) -> None:
    user = new_user(bridge)
    user.send("perdí mi tarjeta")
    assert texts(user.send("no me acuerdo")) == [
        f"No entendí los cuatro dígitos. Escríbalos con números, uno tras otro.\n\n{ASK_DIGITS}"]


def test_two_messages_from_one_user_at_once_are_both_answered_with_one_greeting(bridge: str) -> None:
    user = new_user(bridge)
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(user.send, ["hola", "quiero hablar con una persona"]))
    answered = "\n\n".join(text for posted in both for text in texts(posted))
    assert all(posted.replies for posted in both)
    assert answered.count(GREETING) == 1  # whichever Rasa took first opened the conversation
    assert answered.count(CALL_A_PERSON) == 1


def test_a_rest_mode_chat_gets_every_reply_in_order_and_buttons_to_tap(
        rest_bridge: str, fake_api: FakeTwilioAPI) -> None:
    user = new_user(rest_bridge)
    for text in ("me robaron la cartera con todo", "0000"):  # the second makes sense only after the first
        assert user.send(text).replies == []
    first, question = fake_api.wait_for(2, to=user.address, timeout=30)
    assert (first["from"], first["body"]) == (WHATSAPP_FROM, f"{GREETING}\n\n{ASK_DIGITS}")
    assert question["content_variables"] == {"1": "La tarjeta que termina en 0 0 0 0. ¿La bloqueo?"}
    assert question["content"]["twilio/quick-reply"]["actions"] == [
        {"title": "Sí", "id": "/affirm"}, {"title": "No", "id": "/deny"}]

    user.send("Sí", button_payload="/affirm", button_text="Sí")
    answer = fake_api.wait_for(3, to=user.address, timeout=30)[2]
    assert answer["body"] == f"No encuentro una tarjeta que termine en 0 0 0 0.\n\n{CALL_A_PERSON}"
