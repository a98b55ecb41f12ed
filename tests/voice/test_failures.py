"""Whatever Rasa does, the caller hears something sensible in time and reaches a person or a goodbye."""
from __future__ import annotations

import pytest

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.metrics_tools import grew, scrape
from tests.test_text import HOSTILE_SHAPES
from twilio_bridge.app import create_app
from twilio_bridge.state import SqliteStore
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

APOLOGY = "Lo siento, tengo un problema técnico."


@pytest.mark.parametrize("mode", ["error500", "html", "invalid_json", "empty", "drop", "hang"])
def test_a_failing_rasa_mid_call_hands_the_caller_to_a_person(mode: str, phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.mode = mode
    call.say("perdí mi tarjeta")  # how soon: bench/answer_times.py
    assert call.state == "dialing" and call.dialed == HUMAN
    assert call.heard[0] == APOLOGY


def test_a_failing_rasa_at_call_start_hands_the_caller_to_a_person(phone: TwilioPhone, standin: RasaStandIn) -> None:
    standin.mode = "error500"
    call = phone.call()
    assert call.state == "dialing" and call.heard[0] == APOLOGY


def test_rasa_down_and_no_fallback_number_says_goodbye(reconfigure) -> None:
    phone = reconfigure(rasa_webhook_url="http://127.0.0.1:9/webhooks/rest/webhook", fallback_phone_number=None)
    call = phone.call()
    assert call.ended
    assert call.heard == [APOLOGY, "En este momento no hay nadie disponible. Por favor, llame más tarde. Hasta luego."]


def test_a_huge_reply_is_cut_with_a_note_and_stays_under_twilios_limits(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.mode = "huge"
    call.say("cuéntame todo")  # TwilioWouldFail would raise if a <Say> or the document were too big
    answer = call.answers[-1]
    assert len(answer.body.encode()) <= 64_000
    assert all(len(text) <= 3000 for text in call.heard)
    assert call.heard[-1] == "El resto del mensaje es demasiado largo para leerlo por teléfono."
    assert all(text.endswith((".", "?")) for text in call.heard[:-1])  # cut between sentences, not mid-word


def test_markup_control_characters_and_emoji_are_not_read_aloud(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.mode = "nasty"
    call.say("hola")
    assert call.heard[0] == 'Hola cliente & "amigo" importante nota enlace Título'
    assert call.state == "gathering"


def test_an_unparseable_directive_does_not_break_the_call(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.reply_with([{"recipient_id": call.sid, "text": "Marque su clave."},
                        {"recipient_id": call.sid, "custom": {"gather": {"input": ["dtmf"], "num_digits": "x",
                                                                         "timeout": 999}}},
                        "not an item", {"recipient_id": call.sid, "buttons": "nope"}])
    call.say("hola")
    assert call.heard == ["Marque su clave."] and call.gather["input"] == "dtmf speech"
    assert "numDigits" not in call.gather


class BrokenStore(SqliteStore):
    """A state store that fails on every read: the bridge's own fault, not Rasa's."""

    def get(self, key: str) -> dict | None:
        raise RuntimeError("disk on fire")


def test_an_unexpected_error_is_an_apology_and_a_person_never_a_500(settings, tmp_path) -> None:
    server = LiveServer(create_app(settings, store=BrokenStore(tmp_path / "broken.db")))
    try:
        phone = TwilioPhone(server.url, AUTH_TOKEN)
        call = phone.call()  # TwilioWouldFail would raise on a 500
        assert call.state == "dialing" and call.dialed == HUMAN and call.heard[0] == APOLOGY
        assert call.hangup() == 204  # a status callback still gets its 204
        whatsapp = WhatsAppUser(server.url, AUTH_TOKEN).send("hola")
        assert whatsapp.answer.status == 200 and "problema técnico" in whatsapp.replies[0].body
    finally:
        server.stop()


class UnsavingStore(SqliteStore):
    """Reads work; storing a call's state fails."""

    def put_many(self, entries: list) -> None:
        if any(key.startswith("call:") for key, _, _ in entries):
            raise RuntimeError("disk full")
        super().put_many(entries)


def test_a_hand_off_whose_state_cannot_be_stored_is_counted_once_as_the_error_s(
        settings, standin: RasaStandIn, tmp_path) -> None:
    """Rasa fails, so the caller is handed off; storing that fails too, so the error's hand-off is what the
    caller gets, and the only ending counted (not also the one that never reached the caller)."""
    server = LiveServer(create_app(settings, store=UnsavingStore(tmp_path / "unsaving.db")))
    try:
        standin.mode = "error500"
        before = scrape(server.url)
        call = TwilioPhone(server.url, AUTH_TOKEN).call()
        after = scrape(server.url)
        assert call.state == "dialing" and call.dialed == HUMAN and call.heard[0] == APOLOGY
        assert grew(before, after, "twilio_bridge_call_endings_total", ending="handoff", reason="error") == 1
        assert grew(before, after, "twilio_bridge_call_endings_total", ending="handoff", reason="rasa_failed") == 0
    finally:
        server.stop()


@pytest.mark.parametrize("shape", HOSTILE_SHAPES)
def test_a_100_kb_reply_of_hostile_markup_is_answered_before_twilio_gives_up(
        shape: str, phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.reply_with([{"text": HOSTILE_SHAPES[shape]}, {"text": "¿Algo más?"}], sender=call.sid)
    call.say("cuéntame todo")  # TwilioWouldFail past Twilio's 15 s: the markup took minutes to clean
    assert call.state == "gathering"
    assert call.heard[-1] in ("¿Algo más?", "El resto del mensaje es demasiado largo para leerlo por teléfono.")
