"""A menu answer in any script reaches Rasa, as its button's payload or as the user's text, by phone and by
WhatsApp (REST mode); never a crash, whatever digits a user sends."""
from __future__ import annotations

import dataclasses
import sys
import unicodedata
from collections.abc import Callable

from tests.conftest import AUTH_TOKEN, LiveServer
from tests.whatsapp.test_twiml import new_number
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone, sid
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

DECIMAL_DIGITS = [chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Nd"]
MENU = [{"text": "Elija una opción.", "buttons": [{"title": f"Opción {n}", "payload": f"/b{n}"} for n in range(1, 10)]}]
OTHER_ANSWERS = {  # what reaches Rasa for answers that are not one decimal digit
    "፩": "፩",  # Ethiopic one: a digit (isdigit) that is not decimal, and that int() refuses
    "²": "/b2", "①": "/b1",  # compatibility digits: once folded, they are 2 and 1
    "١٢": "١٢",  # Arabic-Indic twelve: no such button, so the words go as they are
    "7" * 5000: "7" * 5000,  # past the 4300 digits int() takes
}


def expected(answer: str) -> str:
    value = unicodedata.decimal(answer, None) if len(answer) == 1 else None
    if value is None:
        return OTHER_ANSWERS[answer]
    return f"/b{value}" if value >= 1 else answer


ANSWERS = DECIMAL_DIGITS + list(OTHER_ANSWERS)


def test_unicode_has_its_decimal_digits() -> None:
    assert len(DECIMAL_DIGITS) >= 650 and "１" in DECIMAL_DIGITS and "٣" in DECIMAL_DIGITS


def test_every_digit_pressed_or_spoken_on_the_phone_reaches_rasa(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call_sid = sid("CA")  # the stand-in is shared: its canned answers go to this call alone
    for _ in range(1 + 2 * len(ANSWERS)):
        standin.reply_with(MENU, call_sid)
    call = phone.call(call_sid=call_sid)
    for answer in ANSWERS:
        assert call.press(answer)[0] == "Elija una opción."
        assert call.say(answer)[0] == "Elija una opción."
    received = [r["message"] for r in standin.received if r["sender"] == call.sid][1:]
    assert received == [expected(answer) for answer in ANSWERS for _ in ("pressed", "spoken")]


def test_every_digit_written_on_whatsapp_reaches_rasa(
        serve: Callable[[Settings], LiveServer], rest_settings: Settings, standin: RasaStandIn,
        fake_api: FakeTwilioAPI) -> None:
    url = serve(dataclasses.replace(rest_settings, whatsapp_rate_limit=len(ANSWERS))).url
    users = [WhatsAppUser(url, AUTH_TOKEN, number=new_number()) for _ in range(4)]  # four lanes at once
    share = {user.address: ["hola", *ANSWERS[n::len(users)]] for n, user in enumerate(users)}
    for address, texts in share.items():
        for _ in texts:
            standin.reply_with(MENU, address)
    for user in users:
        for text in share[user.address]:
            user.send(text)
    for user in users:
        fake_api.wait_for(len(share[user.address]), to=user.address, timeout=60)
        received = [r["message"] for r in standin.received if r["sender"] == user.address]
        assert received == ["hola", *map(expected, share[user.address][1:])]
