"""Whole calls through the bridge under gunicorn to real Rasa 3.6 and the real action server.

The demo card store knows cards ending in 1234, 5678 and 4321, and a blocked card stays blocked for the
session: each test blocks a card of its own, or none.
"""
from __future__ import annotations

import re

import requests

from twilio_bridge.phrases import SPANISH
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone

from .conftest import AUTH_TOKEN, HUMAN, Assistant
from .real_rasa import GroupServer

GREETING = "Hola, soy el asistente de tarjetas. Puedo bloquear una tarjeta perdida o robada. ¿En qué le ayudo?"
ASK_DIGITS = "Dígame o marque los últimos cuatro dígitos de la tarjeta."
YES_NO_MENU = "Diga o marque 1 para Sí, 2 para No."
ANYTHING_ELSE = "¿Algo más?"
GOODBYE = "Gracias por comunicarse. Hasta luego."
PUT_THROUGH = "Le comunico con una persona. Un momento, por favor."
REFERENCE = r"Su número de referencia es \d \d \d \d, \d \d \d \d\."


def call(bridge: str) -> PhoneCall:
    placed = TwilioPhone(bridge, AUTH_TOKEN).call()
    assert placed.heard == [GREETING]
    return placed


def rasa_tracker(assistant: Assistant, sender: str) -> dict:
    answer = requests.get(f"{assistant.rasa.url}/conversations/{sender}/tracker", timeout=10)
    answer.raise_for_status()
    return answer.json()


def test_a_caller_blocks_a_lost_card_on_the_keypad_and_says_goodbye(bridge: str) -> None:
    caller = call(bridge)
    assert caller.say("perdí mi tarjeta") == [ASK_DIGITS]
    assert caller.gather["numDigits"] == "4" and caller.gather["input"] == "dtmf speech"

    assert caller.press("1234") == ["La tarjeta que termina en 1 2 3 4. ¿La bloqueo?", YES_NO_MENU]
    blocked, anything_else = caller.press("1")
    assert re.fullmatch(rf"Listo\. Bloqueé la tarjeta que termina en 1 2 3 4\. {REFERENCE}", blocked)
    assert anything_else == ANYTHING_ELSE

    assert caller.say("no, gracias") == [GOODBYE]
    assert caller.ended
    assert caller.hangup() == 204


def test_a_caller_speaks_the_digits_then_asks_for_a_person(bridge: str) -> None:
    caller = call(bridge)
    assert caller.say("me robaron la tarjeta") == [ASK_DIGITS]
    assert caller.say("cinco seis siete ocho")[0] == "La tarjeta que termina en 5 6 7 8. ¿La bloqueo?"
    assert caller.say("sí")[0].startswith("Listo. Bloqueé la tarjeta que termina en 5 6 7 8.")

    assert caller.say("quiero hablar con una persona") == [PUT_THROUGH]
    assert caller.dialed == HUMAN
    assert caller.dial_result("completed") == [] and caller.ended


def test_a_number_in_words_is_read_as_its_four_digits(bridge: str) -> None:
    caller = call(bridge)
    caller.say("se me perdió la tarjeta")
    assert caller.say("mil doscientos treinta y cuatro")[0] == "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"
    assert caller.say("no") == ["De acuerdo. No bloqueé ninguna tarjeta.", ANYTHING_ELSE]


def test_digits_not_understood_are_asked_for_again_clearly_then_a_person(bridge: str) -> None:
    caller = call(bridge)
    caller.say("perdí mi tarjeta")
    assert caller.say("ciento veinte") == [
        "No entendí los cuatro dígitos. Dígalos uno por uno, o márquelos en el teclado.", ASK_DIGITS]
    assert caller.say("no sé") == ["No logré entender los dígitos. Le comunico con una persona."]
    assert caller.dialed == HUMAN


def test_a_hello_after_the_greeting_is_not_answered_with_the_greeting_again(bridge: str) -> None:
    caller = call(bridge)
    assert caller.say("hola") == ["Dígame, ¿en qué le puedo ayudar?"]


def test_silence_is_reprompted_and_the_call_goes_on(bridge: str) -> None:
    caller = call(bridge)
    caller.say("perdí mi tarjeta")
    assert caller.silence() == ["¿Sigue ahí? No le escuché.", ASK_DIGITS]
    assert caller.press("4321")[0] == "La tarjeta que termina en 4 3 2 1. ¿La bloqueo?"


def test_not_understood_twice_puts_the_caller_through(bridge: str) -> None:
    caller = call(bridge)
    assert caller.say("ehhh pues este")[0] == "Perdone, no le entendí."
    assert caller.say("este mmm") == ["Perdone, sigo sin entenderle. Le comunico con una persona."]
    assert caller.dialed == HUMAN


def test_hanging_up_while_giving_the_digits_ends_the_conversation_quietly(bridge: str, assistant: Assistant) -> None:
    caller = call(bridge)
    caller.say("perdí mi tarjeta")
    assert caller.hangup() == 204

    tracker = rasa_tracker(assistant, caller.sid)
    assert tracker["latest_message"]["intent"]["name"] == "session_end"
    assert tracker["active_loop"] == {} or tracker["active_loop"].get("name") is None
    assert tracker["slots"]["card_digit_attempts"] is None
    last_user = max(index for index, event in enumerate(tracker["events"]) if event["event"] == "user")
    assert [event for event in tracker["events"][last_user:] if event["event"] == "bot"] == []


def test_the_action_server_going_down_mid_call_puts_the_caller_through(
        bridge: str, actions: GroupServer) -> None:
    caller = call(bridge)
    assert caller.say("perdí mi tarjeta") == [ASK_DIGITS]
    actions.stop()
    # Rasa answers 200 and nothing (its action failed): the bridge's apology, and a person.
    assert caller.press("1234") == [SPANISH.trouble, SPANISH.transfer]
    assert caller.dialed == HUMAN
