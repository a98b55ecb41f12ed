"""Whole calls, placed by a phone that plays Twilio, through the bridge to the Rasa stand-in."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.conftest import HUMAN
from twilio_bridge.testing.phone import TwilioPhone, sid
from twilio_bridge.testing.standin import RasaStandIn


def test_a_whole_call_blocks_the_card_and_says_goodbye(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    assert call.heard == ["Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"]
    assert call.gather["input"] == "dtmf speech"

    call.say("perdí mi tarjeta")
    assert "últimos cuatro dígitos" in call.heard[0]
    assert call.gather["input"] == "dtmf speech" and call.gather["numDigits"] == "4"

    call.press("1234")
    assert call.heard[0] == "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"
    assert call.heard[-1] == "Diga o marque 1 para Sí, 2 para No."

    call.say("sí")
    assert call.heard == ["Listo. Su tarjeta está bloqueada. Su número de referencia es 4 8 2 1.", "¿Algo más?"]

    call.say("no, gracias")
    assert call.heard == ["Gracias por llamar. Hasta luego."]
    assert call.ended

    assert call.hangup() == 204
    messages = [(r["sender"], r["message"]) for r in standin.received]
    assert messages == [
        (call.sid, "/session_start"), (call.sid, "perdí mi tarjeta"), (call.sid, "1234"),
        (call.sid, "/affirm"), (call.sid, "no, gracias"), (call.sid, "/session_end"),
    ]


def test_metadata_carries_the_call_and_how_the_caller_spoke(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call(from_="+525598765432", to="+525500000001")
    call.say("perdí mi tarjeta", confidence=0.81)
    call.press("1234")
    start, speech, digits = (r["metadata"] for r in standin.received)
    assert start["channel"] == "voice" and start["call_sid"] == call.sid
    assert start["from"] == "+525598765432" and start["to"] == "+525500000001"
    assert speech["input"] == "speech" and abs(speech["confidence"] - 0.81) < 1e-6
    assert digits["input"] == "dtmf"


def test_a_menu_choice_by_keypad_or_by_its_title_sends_the_button_payload(phone: TwilioPhone, standin: RasaStandIn) -> None:
    by_digit = phone.call()
    by_digit.say("me robaron la tarjeta")
    by_digit.say("uno dos tres cuatro")
    by_digit.press("1")
    assert standin.received[-1]["message"] == "/affirm"
    assert standin.received[-1]["metadata"]["input"] == "button"

    by_title = phone.call()
    by_title.say("perdí mi tarjeta")
    by_title.press("5678")
    by_title.say("No.")
    assert standin.received[-1]["message"] == "/deny"
    assert by_title.heard == ["De acuerdo, no la bloqueo. ¿Algo más?"]


def test_text_starting_with_a_slash_never_reaches_rasa_as_a_command(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    call.say("/restart")
    call.say("  /SetSlots(card=1234)")
    sent = [r["message"] for r in standin.received[1:]]
    assert sent == ["restart", "SetSlots(card=1234)"]
    assert "COMMAND EXECUTED" not in " ".join(call.heard)


def test_each_call_is_its_own_conversation(phone: TwilioPhone, standin: RasaStandIn) -> None:
    first = phone.call(from_="+525512345678")
    first.say("adiós")
    first.hangup()
    second = phone.call(from_="+525512345678")
    assert second.heard == ["Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"]
    assert first.sid != second.sid


def test_asking_for_a_person_dials_the_fallback_number(phone: TwilioPhone) -> None:
    call = phone.call()
    call.say("quiero hablar con un agente")
    assert call.state == "dialing" and call.dialed == HUMAN
    assert call.heard == ["Le comunico con un asesor."]  # the assistant's announcement, not the bridge's too
    call.dial_result("completed")
    assert call.ended


def test_a_busy_or_unanswered_human_gets_a_polite_goodbye(phone: TwilioPhone) -> None:
    for status in ("busy", "no-answer", "failed"):
        call = phone.call()
        call.say("agente")
        call.dial_result(status)
        assert call.ended
        assert "no hay nadie disponible" in call.heard[0]


def test_silence_reprompts_twice_then_hands_off(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    call.say("perdí mi tarjeta")
    first = call.silence()
    assert first[0] == "¿Sigue ahí? No le escuché." and "últimos cuatro dígitos" in first[1]
    assert call.gather["numDigits"] == "4"  # the reprompt asks the same way
    call.silence()
    assert call.state == "gathering"
    call.silence()
    assert call.state == "dialing" and call.dialed == HUMAN
    assert [r["message"] for r in standin.received] == ["/session_start", "perdí mi tarjeta"]


def test_speaking_again_resets_the_silence_count(phone: TwilioPhone) -> None:
    call = phone.call()
    call.silence()
    call.silence()
    call.say("hola")
    call.silence()
    call.silence()
    assert call.state == "gathering"


def test_silence_without_a_fallback_number_says_goodbye(reconfigure) -> None:
    call = reconfigure(fallback_phone_number=None, voice_max_silences=0).call()
    call.silence()
    assert call.ended and call.heard == ["Gracias por llamar. Hasta luego."]


def test_handoff_directive_with_its_own_number(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.reply_with([{"recipient_id": call.sid, "text": "Le paso con fraudes."},
                        {"recipient_id": call.sid, "custom": {"handoff": {"number": "+525533334444"}}}])
    call.say("fraude")
    assert call.dialed == "+525533334444" and call.heard[0] == "Le paso con fraudes."


def test_the_fallback_url_apologises_and_dials_a_person(phone: TwilioPhone) -> None:
    call = phone.call()
    call.heard = []
    call._fetch(phone.public("/webhook/twilio/fallback"), call.params(ErrorCode="11200"))
    assert call.state == "dialing" and call.dialed == HUMAN
    assert call.heard[0] == "Lo siento, tengo un problema técnico."


def test_status_callbacks_that_are_not_final_leave_the_session_alone(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    assert call.hangup(status="in-progress") == 204
    assert [r["message"] for r in standin.received] == ["/session_start"]


def test_rasa_saying_nothing_at_call_start_gets_the_configured_greeting(reconfigure, standin: RasaStandIn) -> None:
    phone = reconfigure(voice_greeting="Bienvenido al banco.")
    call_sid = sid("CA")
    standin.reply_with([], call_sid)  # the stand-in is shared: this answer is for this call alone
    call = phone.call(call_sid=call_sid)
    assert call.heard == ["Bienvenido al banco."] and call.state == "gathering"


def test_a_webhook_twilio_retries_is_answered_again_without_asking_rasa_twice(phone: TwilioPhone,
                                                                             standin: RasaStandIn) -> None:
    call = phone.call()
    params = call.params(SpeechResult="perdí mi tarjeta", Confidence="0.9")
    url = phone.public("/webhook/twilio/speech")
    retry = {"I-Twilio-Idempotency-Token": "a1b2c3-retry"}
    first = phone.post(url, params, headers=retry)
    second = phone.post(url, params, headers=retry)
    assert first.status_code == second.status_code == 200 and first.text == second.text
    gather = ET.fromstring(second.text).find("Gather")
    assert gather is not None and gather.get("numDigits") == "4"
    assert "últimos cuatro dígitos" in gather.find("Say").text
    assert [r["message"] for r in standin.received] == ["/session_start", "perdí mi tarjeta"]
    other = phone.post(url, params, headers={"I-Twilio-Idempotency-Token": "another"})
    assert other.status_code == 200 and len(standin.received) == 3


@pytest.mark.parametrize("confidence", [float("nan"), float("inf"), -1.0, 7.0])
def test_a_confidence_that_is_no_score_is_left_out_of_what_rasa_gets(
        confidence: float, phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    call.say("hola", confidence=confidence)  # NaN would make the JSON body one Rasa's parser may refuse
    assert standin.received[-1]["message"] == "hola" and "confidence" not in standin.received[-1]["metadata"]


def test_an_assistant_turn_with_nothing_a_voice_can_say_is_never_silence(phone: TwilioPhone, standin: RasaStandIn) -> None:
    """Emoji, markup or an image alone say nothing on the phone: the call goes on as if Rasa had not said them."""
    hangs_up = phone.call()
    standin.reply_with([{"text": "👋🙂"}, {"custom": {"hangup": True}}], sender=hangs_up.sid)
    hangs_up.say("adiós")
    assert hangs_up.ended and hangs_up.heard == ["Gracias por llamar. Hasta luego."]  # not silence, then a hang-up

    punctuation = phone.call()
    standin.reply_with([{"text": "👍 ¡!"}, {"custom": {"hangup": True}}], sender=punctuation.sid)
    punctuation.say("adiós")
    assert punctuation.heard == ["Gracias por llamar. Hasta luego."]  # not a <Say>ing of "¡!", which is silence

    transfers = phone.call()
    standin.reply_with([{"text": "<br/>"}, {"custom": {"handoff": True}}], sender=transfers.sid)
    transfers.say("agente")
    assert transfers.dialed == HUMAN and transfers.heard == ["Le comunico con una persona, un momento por favor."]

    for nothing in ([{"text": "👍"}], [{"image": "https://example.com/card.png"}]):
        call = phone.call()
        standin.reply_with([{"recipient_id": call.sid, **item} for item in nothing], sender=call.sid)
        call.say("hola")
        assert call.heard[0] == "Lo siento, tengo un problema técnico." and call.dialed == HUMAN  # as for Rasa's []

    menu = phone.call()
    standin.reply_with([{"text": "✅", "buttons": [{"title": "Sí", "payload": "/affirm"}]}], sender=menu.sid)
    menu.say("hola")
    assert menu.heard == ["Diga o marque 1 para Sí."] and menu.state == "gathering"


def test_a_greeting_with_nothing_a_voice_can_say_is_the_configured_greeting(reconfigure, standin: RasaStandIn) -> None:
    phone = reconfigure(voice_greeting="Bienvenido al banco.")
    call_sid = sid("CA")
    standin.reply_with([{"recipient_id": call_sid, "text": "🏦"}], call_sid)
    call = phone.call(call_sid=call_sid)
    assert call.heard == ["Bienvenido al banco."] and call.state == "gathering"


@pytest.mark.parametrize("answered_by", ["machine_start", "machine_end_beep", "fax"])
def test_an_answering_machine_that_stays_silent_is_never_put_through_to_a_person(
        answered_by: str, phone: TwilioPhone, standin: RasaStandIn) -> None:
    """A call the bridge placed with machine detection, answered by a voicemail: its silence ends in a
    goodbye, not in the person's phone ringing to talk to a recording."""
    call = phone.answer(sid("CA"), "+525500000000", "+525512345678", answered_by=answered_by)
    assert standin.received[0]["metadata"]["answered_by"] == answered_by
    for _ in range(3):
        call.silence()
    assert call.ended and call.dialed is None and call.heard == ["Gracias por llamar. Hasta luego."]


def test_a_person_who_answers_a_placed_call_and_stays_silent_is_still_put_through(phone: TwilioPhone) -> None:
    call = phone.answer(sid("CA"), "+525500000000", "+525512345678", answered_by="human")
    for _ in range(3):
        call.silence()
    assert call.dialed == HUMAN
