"""Relay mode (VOICE_MODE=relay): a call over Twilio's ConversationRelay WebSocket, played by the relay double
against the bridge over real HTTP and WebSocket, with the Rasa stand-in as the assistant."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.servers import wait_for
from twilio_bridge import routes
from twilio_bridge.config import ConfigError, Settings, load_settings
from twilio_bridge.testing.phone import TwilioPhone, check_voice_answer
from twilio_bridge.testing.relay import RelayCall, RelayRefused, open_relay_socket
from twilio_bridge.testing.standin import ASK_DIGITS, BLOCKED, GOODBYE, GREETING, HANDOFF, RasaStandIn

APOLOGY = "Lo siento, tengo un problema técnico."
HOLD = "Un momento, por favor."
TRANSFER = "Le comunico con una persona, un momento por favor."
MENU = "Diga o marque 1 para Sí, 2 para No."

RelayPhone = Callable[..., TwilioPhone]


@pytest.fixture
def relay_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, voice_mode="relay", voice_silence_seconds=5.0)


@pytest.fixture
def relay_phone(serve: Callable[[Settings], LiveServer], relay_settings: Settings) -> RelayPhone:
    """A phone to a relay-mode bridge, with some settings changed."""

    def start(**changes: object) -> TwilioPhone:
        return TwilioPhone(serve(dataclasses.replace(relay_settings, **changes)).url, AUTH_TOKEN)

    return start


def received(standin: RasaStandIn, call: RelayCall) -> list[dict]:
    return [r for r in standin.received if r["sender"] == call.sid]


def test_the_call_webhook_connects_twilio_to_the_relay_with_the_relay_settings(relay_phone: RelayPhone) -> None:
    phone = relay_phone()
    answer = phone.fetch(phone.public(routes.VOICE), {"CallSid": "CA" + "1" * 32, "From": "+525512345678"})
    root = check_voice_answer(answer, answer.content_type)
    connect = root.find("Connect")
    relay = root.find("Connect/ConversationRelay")
    assert connect is not None and relay is not None and len(root) == 1
    assert connect.get("action") == routes.RELAY_END
    assert relay.get("url") == "ws" + phone.base_url.removeprefix("http") + routes.RELAY
    assert (relay.get("language"), relay.get("ttsProvider"), relay.get("voice")) == ("es-MX", "Amazon", "Mia-Neural")
    assert (relay.get("dtmfDetection"), relay.get("interruptible")) == ("true", "any")


def test_behind_a_proxy_the_urls_are_the_public_wss_ones_and_the_upgrade_is_signed_for_them(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    local = relay_phone(public_base_url="https://ivr.example.com")
    phone = TwilioPhone(local.base_url, AUTH_TOKEN, public_base_url="https://ivr.example.com")
    call = RelayCall(phone)
    assert call.start().text == GREETING
    assert call.relay["url"] == "wss://ivr.example.com/webhook/twilio/relay"
    assert call.action_url == "https://ivr.example.com/webhook/twilio/relay/end"
    call.hangup()


def test_a_whole_card_blocking_call_with_keypad_digits(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    assert call.start().text == GREETING
    assert call.say("Perdí mi tarjeta").text == ASK_DIGITS
    confirm = call.press("1234")
    assert confirm.text == f"La tarjeta que termina en 1 2 3 4. ¿La bloqueo? {MENU}"
    assert confirm.tokens[-1] == MENU  # the menu is the reply's last token
    assert call.press("1").text == BLOCKED.replace("\n\n", " ")
    assert call.say("No, adiós").text == GOODBYE
    assert call.ended() == {"reason": "hangup", "why": "assistant"}
    assert call.state == "ended" and call.dialed is None and call.heard == []

    messages = received(standin, call)
    assert [(m["message"], m["metadata"]["input"]) for m in messages] == [
        ("/session_start", "call_start"), ("Perdí mi tarjeta", "speech"), ("1234", "dtmf"), ("/affirm", "button"),
        ("No, adiós", "speech")]
    start = messages[0]["metadata"]
    assert (start["channel"], start["call_sid"], start["from"], start["direction"]) == (
        "voice", call.sid, "+525512345678", "inbound")


def test_a_hangup_without_words_from_the_assistant_says_goodbye_before_it_hangs_up(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    standin.reply_with([{"custom": {"hangup": True}}], call.sid)
    assert call.say("adiós").text == GOODBYE  # as gather mode says it: the caller never hangs up on silence
    assert call.ended() == {"reason": "hangup", "why": "assistant"}
    assert call.heard == [] and call.state == "ended"


def test_an_answer_with_nothing_a_voice_can_say_is_no_answer_not_silence(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    """Emoji or markup alone stream no token: the caller would wait in silence for "¿Sigue ahí?". As in gather
    mode, it is Rasa's [] (an apology and a person), and before a hang-up the goodbye is said."""
    call = RelayCall(relay_phone())
    call.start()
    standin.reply_with([{"text": "👍 ¡!"}, {"text": "<br/>"}], call.sid)
    assert call.say("gracias").text == APOLOGY
    assert call.ended() == {"reason": "handoff", "why": "rasa_failed", "number": HUMAN}

    goodbye = RelayCall(relay_phone())
    goodbye.start()
    standin.reply_with([{"text": "👋"}, {"custom": {"hangup": True}}], goodbye.sid)
    assert goodbye.say("adiós").text == GOODBYE
    assert goodbye.ended() == {"reason": "hangup", "why": "assistant"}


def test_a_handoff_goes_through_the_action_url_to_a_person(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    assert call.say("quiero hablar con un asesor").text == HANDOFF
    assert call.ended() == {"reason": "handoff", "why": "assistant", "number": HUMAN, "announced": True}
    assert call.heard == [] and call.state == "dialing" and call.dialed == HUMAN  # the assistant announced it
    assert call.after.dial_result("busy") == ["En este momento no hay nadie disponible. Por favor, llame más tarde. "
                                              "Hasta luego."]


def test_the_caller_hanging_up_closes_the_session_and_the_status_callback_ends_rasas(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    assert call.hangup() == 204
    wait_for(lambda: [m["message"] for m in received(standin, call)][-1:] == ["/session_end"])
    assert received(standin, call)[-1]["metadata"]["call_status"] == "completed"


@pytest.mark.parametrize("mode", ["error500", "html", "invalid_json", "empty", "drop", "hang"])
def test_a_failing_rasa_mid_call_is_an_apology_and_a_person(mode: str, relay_phone: RelayPhone,
                                                            standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    standin.mode = mode
    assert call.say("perdí mi tarjeta").text == APOLOGY
    why = "max_wait" if mode == "hang" else "rasa_failed"
    assert call.ended() == {"reason": "handoff", "why": why, "number": HUMAN}
    assert call.heard == [TRANSFER] and call.dialed == HUMAN


def test_rasa_down_at_the_start_apologises_and_without_a_person_says_goodbye(relay_phone: RelayPhone) -> None:
    call = RelayCall(relay_phone(rasa_webhook_url="http://127.0.0.1:9/webhooks/rest/webhook", fallback_phone_number=None))
    assert call.start().text == APOLOGY
    assert call.ended() == {"reason": "handoff", "why": "rasa_failed"}
    assert call.heard == ["En este momento no hay nadie disponible. Por favor, llame más tarde. Hasta luego."]
    assert call.state == "ended"


def held_turn(relay_phone: RelayPhone, standin: RasaStandIn, delay: float, max_wait: float = 10.0) -> RelayCall:
    """A call whose first turn Rasa answers after `delay` s: holding after 0.3 s, the caller has heard the phrase."""
    call = RelayCall(relay_phone(voice_hold_seconds=0.3, rasa_timeout=0.3, rasa_max_wait_seconds=max_wait))
    call.start()
    standin.delay = delay
    assert call.say("perdí mi tarjeta").text == HOLD
    return call


def test_a_slow_rasa_gets_a_holding_phrase_then_its_answer(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = held_turn(relay_phone, standin, delay=1.0)
    assert call.reply().text == ASK_DIGITS
    call.hangup()


def test_past_the_longest_wait_a_slow_rasa_is_an_apology_and_a_person(relay_phone: RelayPhone,
                                                                       standin: RasaStandIn) -> None:
    call = held_turn(relay_phone, standin, delay=4.0, max_wait=1.0)
    assert call.reply().text == APOLOGY
    assert call.ended() == {"reason": "handoff", "why": "max_wait", "number": HUMAN}


def test_with_every_rasa_slot_taken_a_caller_is_handed_off_at_once_not_queued(relay_phone: RelayPhone,
                                                                              standin: RasaStandIn) -> None:
    phone = relay_phone(voice_hold_seconds=0.3, rasa_timeout=0.3, rasa_max_wait_seconds=10.0, rasa_max_in_flight=1)
    first, second = RelayCall(phone), RelayCall(phone)
    assert first.start().text == second.start().text == GREETING
    standin.delay = 4.0
    assert first.say("perdí mi tarjeta").text == HOLD  # its ask holds the only slot
    assert second.say("perdí mi tarjeta").text == APOLOGY  # no holding phrase: it never waited behind the first
    assert second.ended() == {"reason": "handoff", "why": "rasa_failed", "number": HUMAN}
    assert second.heard == [TRANSFER] and second.dialed == HUMAN
    assert [m["message"] for m in received(standin, second)] == ["/session_start"]
    assert first.reply().text == ASK_DIGITS
    standin.delay = 0
    third = RelayCall(phone)
    assert third.start().text == GREETING  # the slot is free again once Rasa has answered
    first.hangup()
    third.hangup()


def test_silence_is_reprompted_then_handed_off(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone(voice_silence_seconds=0.3, voice_max_silences=2))
    call.start()
    assert call.say("perdí mi tarjeta").text == ASK_DIGITS
    assert call.reply().text == f"¿Sigue ahí? No le escuché. {ASK_DIGITS}"
    assert call.reply().text == f"¿Sigue ahí? No le escuché. {ASK_DIGITS}"
    assert call.ended() == {"reason": "handoff", "why": "silence", "number": HUMAN}
    assert call.dialed == HUMAN
    assert [m["message"] for m in received(standin, call)] == ["/session_start", "perdí mi tarjeta"]


@pytest.mark.parametrize("token", [None, "not-the-auth-token"])
def test_an_unsigned_or_wrongly_signed_upgrade_is_refused_before_it_happens(
        token: str | None, relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    phone = relay_phone()
    with pytest.raises(RelayRefused) as refused:
        open_relay_socket(TwilioPhone(phone.base_url, token), "ws" + phone.base_url.removeprefix("http") + routes.RELAY)
    assert refused.value.status == 403
    assert standin.received == []


def test_a_caller_cannot_send_rasa_a_command(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    assert call.say("/restart").text != "COMMAND EXECUTED"
    call.say('/SetSlots(card_blocked=true)')
    call.hangup()
    spoken = [m["message"] for m in received(standin, call)][1:3]
    assert spoken == ["restart", "SetSlots(card_blocked=true)"]


def test_what_an_interrupted_caller_heard_reaches_rasa_with_the_next_message(relay_phone: RelayPhone,
                                                                             standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    call.interrupt("Hola, soy el asistente", ms=900)
    call.say("perdí mi tarjeta")
    call.say("uno dos tres cuatro")
    call.hangup()
    first, second = received(standin, call)[1:3]
    assert first["metadata"]["interrupted"] == {"heard": "Hola, soy el asistente"}
    assert "interrupted" not in second["metadata"]


def test_a_frame_nested_too_deep_to_read_is_skipped_and_the_call_goes_on(relay_phone: RelayPhone,
                                                                         standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    assert call.socket is not None
    call.socket.send("[" * 60000)  # Python's JSON parser gives up on it with RecursionError, not ValueError
    assert call.say("perdí mi tarjeta").text == ASK_DIGITS
    call.hangup()


def test_an_interrupted_holding_phrase_is_not_reported_as_an_interrupted_answer(relay_phone: RelayPhone,
                                                                                standin: RasaStandIn) -> None:
    call = held_turn(relay_phone, standin, delay=1.5)
    call.interrupt("Un mo", ms=200)  # read only once the answer has been spoken
    assert call.reply().text == ASK_DIGITS
    standin.delay = 0
    assert call.say("uno dos tres cuatro").text.startswith("La tarjeta que termina en 1 2 3 4.")
    call.interrupt("La tarjeta que termina", ms=700)  # the answer itself: Rasa hears of it
    assert call.press("1").text == BLOCKED.replace("\n\n", " ")
    call.hangup()
    answered, confirmed = received(standin, call)[2:4]
    assert "interrupted" not in answered["metadata"]
    assert confirmed["metadata"]["interrupted"] == {"heard": "La tarjeta que termina"}


def test_a_session_ending_without_handoff_data_gets_an_apology_and_a_person(relay_phone: RelayPhone) -> None:
    phone = relay_phone()
    for data in (None, "not json", json.dumps({"reason": "sideways"})):
        params = {"CallSid": "CA" + "2" * 32, "SessionStatus": "failed", **({"HandoffData": data} if data else {})}
        answer = phone.fetch(phone.public(routes.RELAY_END), params)
        root = check_voice_answer(answer, answer.content_type)
        assert [say.text for say in root.iter("Say")] == [APOLOGY, TRANSFER]
        assert root.findtext("Dial") == HUMAN


def test_the_end_route_is_signed_like_every_webhook(relay_phone: RelayPhone) -> None:
    phone = relay_phone()
    unsigned = TwilioPhone(phone.base_url, None)
    assert unsigned.post(unsigned.public(routes.RELAY_END), {"HandoffData": '{"reason": "hangup"}'}).status_code == 403


def test_relay_settings_are_checked_at_start() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_MODE": "stream", "VOICE_RELAY_INTERRUPTIBLE": "sometimes",
                       "VOICE_SILENCE_SECONDS": "0"})
    assert [line.split("=")[0] for line in caught.value.problems] == [
        "VOICE_MODE", "VOICE_SILENCE_SECONDS", "VOICE_RELAY_INTERRUPTIBLE"]
    english = load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_MODE": "RELAY", "VOICE_LANGUAGE": "en-US"})
    assert (english.voice_mode, english.relay_voice_name) == ("relay", "Joanna-Neural")
    assert load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_RELAY_TTS_PROVIDER": "Google"}).relay_voice_name is None


def test_keypad_digits_end_at_the_finish_key_or_when_the_caller_stops_typing(relay_phone: RelayPhone,
                                                                            standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    ask_pin = [{"text": "Marque su clave y la tecla gato."}, {"custom": {"gather": {"input": "dtmf",
                                                                                   "finish_on_key": "#", "timeout": 1}}}]
    standin.reply_with(ask_pin, call.sid)
    assert call.say("quiero mi saldo").text == "Marque su clave y la tecla gato."
    standin.reply_with(ask_pin, call.sid)
    call.press("907#")
    call.press("55")  # no finish key: sent when the caller stops, after the directive's 1 s
    call.hangup()
    assert [(m["message"], m["metadata"]["input"]) for m in received(standin, call)][2:4] == [
        ("907", "dtmf"), ("55", "dtmf")]


def test_keypad_digits_asked_for_without_a_count_or_finish_key_are_one_answer_as_in_a_gather(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    ask_pin = [{"text": "Marque su clave."}, {"custom": {"gather": {"input": "dtmf", "timeout": 1}}}]
    standin.reply_with(ask_pin, call.sid)
    assert call.say("quiero mi saldo").text == "Marque su clave."
    standin.reply_with(ask_pin, call.sid)
    call.press("1234")  # one answer, sent when the caller stops, after the directive's 1 s
    call.send({"type": "dtmf", "digit": "#"})  # nothing typed yet: no answer at all
    call.press("907#")  # '#' ends the digits, Twilio's default finish key
    assert call.say("adiós").text == GOODBYE
    call.hangup()
    assert [(m["message"], m["metadata"]["input"]) for m in received(standin, call)][2:5] == [
        ("1234", "dtmf"), ("907", "dtmf"), ("adiós", "speech")]


def test_a_habitual_finish_key_after_the_asked_for_digits_does_not_answer_the_next_question(
        relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone())
    call.start()
    assert call.say("Perdí mi tarjeta").text == ASK_DIGITS  # asks for 4 digits
    assert call.press("1234#").text == f"La tarjeta que termina en 1 2 3 4. ¿La bloqueo? {MENU}"
    assert call.press("1").text == BLOCKED.replace("\n\n", " ")  # the '#' came before it, and answered nothing
    call.hangup()
    assert [m["message"] for m in received(standin, call)][1:4] == ["Perdí mi tarjeta", "1234", "/affirm"]


def test_silence_without_a_person_to_call_ends_with_a_goodbye(relay_phone: RelayPhone, standin: RasaStandIn) -> None:
    call = RelayCall(relay_phone(voice_silence_seconds=0.2, voice_max_silences=0, fallback_phone_number=None))
    call.start()
    assert call.ended() == {"reason": "handoff", "why": "silence"}
    assert call.heard == ["Gracias por llamar. Hasta luego."] and call.state == "ended"
