"""Outbound calls over real HTTP: the Calls API request, the context at the start of the answered call (Twilio
played by TwilioPhone on the voice webhook the call named), and a call nobody answered, reported by GET."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import requests

from tests.conftest import AUTH_TOKEN
from tests.outbound.conftest import CARD_ALERT, CUSTOMER, VOICE_FROM, Outbound
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.relay import RelayCall
from twilio_bridge.testing.standin import CARD_ALERT as SPOKEN_ALERT
from twilio_bridge.testing.standin import KEPT_BLOCKED, RasaStandIn


def test_the_calls_api_is_asked_for_the_call_with_the_voice_and_status_webhooks(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    placed = outbound.call({"to": CUSTOMER, "context": CARD_ALERT, "machine_detection": "Enable"})
    [call] = fake_api.calls
    assert placed["call_sid"] == call["sid"] and placed["status"] == "queued"
    assert (call["to"], call["from"], call["method"], call["machine_detection"]) == (
        CUSTOMER, VOICE_FROM, "POST", "Enable")
    assert call["url"] == f"{outbound.url}/webhook/twilio/voice"
    assert call["status_callback"] == f"{outbound.url}/webhook/twilio/status?outbound={placed['id']}"
    assert call["status_callback_events"] == ["initiated", "ringing", "answered", "completed"]
    assert outbound.get(placed["status_url"]).json()["status"] == "queued"


def test_the_answered_call_starts_with_its_context_and_the_same_dialogue_answers(
        outbound: Outbound, fake_api: FakeTwilioAPI, customer_phone: TwilioPhone, standin: RasaStandIn) -> None:
    placed = outbound.call({"to": CUSTOMER, "context": CARD_ALERT})
    [placed_call] = fake_api.calls
    call = customer_phone.answer(placed["call_sid"], VOICE_FROM, CUSTOMER, placed_call["status_callback"],
                                 answered_by="human")
    assert call.heard == [SPOKEN_ALERT.format(digits="1 2 3 4"), "Diga o marque 1 para Sí, 2 para No."]
    start = standin.received[0]
    assert (start["sender"], start["message"]) == (placed["call_sid"], "/session_start")
    assert start["metadata"]["direction"] == "outbound-api" and start["metadata"]["outbound_context"] == CARD_ALERT
    assert start["metadata"]["outbound_id"] == placed["id"] and start["metadata"]["answered_by"] == "human"

    call.press("2")
    assert call.heard[0] == KEPT_BLOCKED.format(digits="1 2 3 4")
    assert "outbound_context" not in standin.received[-1]["metadata"]  # the context opens the call, no more
    assert call.hangup() == 204
    report = outbound.get(placed["status_url"]).json()
    assert (report["status"], report["answered"], report["duration"]) == ("completed", True, "42")
    assert standin.received[-1]["message"] == "/session_end"


def test_a_call_nobody_answers_is_reported_counted_and_never_reaches_rasa(
        outbound: Outbound, fake_api: FakeTwilioAPI, standin: RasaStandIn) -> None:
    placed = outbound.call({"to": CUSTOMER, "context": CARD_ALERT})
    assert fake_api.end_call(placed["call_sid"], "no-answer") == [204, 204, 204]
    report = outbound.get(placed["status_url"]).json()
    assert (report["status"], report["answered"], report["call_sid"]) == ("no-answer", False, placed["call_sid"])
    assert standin.received == []
    metrics = requests.get(outbound.url + "/metrics", timeout=5).text
    assert 'twilio_bridge_outbound_calls_total{result="no-answer"}' in metrics


def test_a_busy_line_is_reported_with_twilios_details(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    placed = outbound.call({"to": CUSTOMER})
    fake_api.end_call(placed["call_sid"], "busy", SipResponseCode="486")
    report = outbound.get(placed["status_url"]).json()
    assert (report["status"], report["answered"], report["sip_response_code"]) == ("busy", False, "486")


def test_in_relay_mode_the_answered_call_starts_with_its_context_too(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, fake_api: FakeTwilioAPI,
        standin: RasaStandIn) -> None:
    bridge = start_outbound(dataclasses.replace(outbound_settings, voice_mode="relay"))
    placed = bridge.call({"to": CUSTOMER, "context": CARD_ALERT})
    call = RelayCall(TwilioPhone(bridge.url, AUTH_TOKEN), VOICE_FROM, CUSTOMER, call_sid=placed["call_sid"])
    assert call.start().text == f"{SPOKEN_ALERT.format(digits='1 2 3 4')} Diga o marque 1 para Sí, 2 para No."
    start = standin.received[0]
    assert (start["sender"], start["message"]) == (placed["call_sid"], "/session_start")
    assert start["metadata"]["direction"] == "outbound-api" and start["metadata"]["outbound_context"] == CARD_ALERT
    call.hangup()
