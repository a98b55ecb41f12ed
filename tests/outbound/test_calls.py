"""Outbound calls over real HTTP: the Calls API request, the context at the start of the answered call (Twilio
played by TwilioPhone on the voice webhook the call named), and a call nobody answered, reported by GET."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.conftest import AUTH_TOKEN
from tests.outbound.conftest import CARD_ALERT, CUSTOMER, VOICE_FROM, Outbound, TwilioSide
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import ACCOUNT_SID, FakeTwilioAPI
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone, check_voice_answer
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
    assert call["url"] == f"{outbound.url}/webhook/twilio/voice?outbound={placed['id']}"
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


def progress(call: dict[str, Any], status: str) -> dict[str, str]:
    """A status callback's parameters, as Twilio posts them for a call the Calls API placed."""
    return {"CallSid": call["sid"], "AccountSid": ACCOUNT_SID, "From": call["from"], "To": call["to"],
            "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events"}


def test_callbacks_and_the_answer_before_the_calls_api_answers_still_reach_the_call(
        outbound: Outbound, customer_phone: TwilioPhone, standin: RasaStandIn,
        before_the_calls_api_answers: Callable[[TwilioSide], None]) -> None:
    """Twilio posted `initiated` and `ringing`, and the customer answered, before the Calls API's answer reached
    the bridge: the bridge had not stored the call yet, so GET said queued and the call opened without its context."""
    early: dict[str, Any] = {}

    def twilio(call: dict[str, Any]) -> None:
        early["callbacks"] = [customer_phone.post(call["status_callback"], progress(call, status)).status_code
                              for status in ("initiated", "ringing")]
        answered = PhoneCall(customer_phone, call["sid"], call["from"], call["to"], direction="outbound-api",
                             status_callback=call["status_callback"])
        early["heard"] = answered.follow(call["url"], answered.params())
        early["call"] = answered

    before_the_calls_api_answers(twilio)
    placed = outbound.call({"to": CUSTOMER, "context": CARD_ALERT})
    assert early["callbacks"] == [204, 204]
    assert outbound.get(placed["status_url"]).json()["status"] == "ringing"
    assert early["heard"] == [SPOKEN_ALERT.format(digits="1 2 3 4"), "Diga o marque 1 para Sí, 2 para No."]
    start = standin.received[0]
    assert (start["sender"], start["message"]) == (placed["call_sid"], "/session_start")
    assert start["metadata"]["outbound_context"] == CARD_ALERT and start["metadata"]["outbound_id"] == placed["id"]

    call: PhoneCall = early["call"]
    assert call.press("2")[0] == KEPT_BLOCKED.format(digits="1 2 3 4")
    assert call.hangup() == 204
    assert outbound.get(placed["status_url"]).json()["status"] == "completed"


def test_in_relay_mode_a_call_answered_before_the_calls_api_answers_starts_with_its_context(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, standin: RasaStandIn,
        before_the_calls_api_answers: Callable[[TwilioSide], None]) -> None:
    """The voice webhook keeps the metadata the relay session opens Rasa's session with: it must have the context
    even when it comes before the Calls API's answer."""
    bridge = start_outbound(dataclasses.replace(outbound_settings, voice_mode="relay"))
    early: dict[str, Any] = {}

    def twilio(call: dict[str, Any]) -> None:
        relay = RelayCall(TwilioPhone(bridge.url, AUTH_TOKEN), call["from"], call["to"], call_sid=call["sid"],
                          direction="outbound-api", status_callback=call["status_callback"])
        early["answer"] = relay.phone.fetch(call["url"], relay.after.params())
        early["call"] = relay

    before_the_calls_api_answers(twilio)
    placed = bridge.call({"to": CUSTOMER, "context": CARD_ALERT})
    answer, call = early["answer"], early["call"]
    connect = check_voice_answer(answer, answer.content_type).find("Connect")
    relay = connect.find("ConversationRelay") if connect is not None else None
    assert connect is not None and relay is not None, answer.body
    greeting = call.connect(relay.attrib["url"], call.phone.public(connect.get("action") or "", answer.url))
    assert greeting.text.startswith(SPOKEN_ALERT.format(digits="1 2 3 4"))
    start = standin.received[0]
    assert (start["sender"], start["message"]) == (placed["call_sid"], "/session_start")
    assert start["metadata"]["outbound_context"] == CARD_ALERT and start["metadata"]["outbound_id"] == placed["id"]
    assert call.hangup() == 204


def test_a_call_the_calls_api_refuses_is_reported_failed_not_queued(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    """The call is stored before Twilio is asked: refused, its record says so with Twilio's code."""
    fake_api.fail("21215")
    refused = outbound.post("/api/outbound/calls", {"to": CUSTOMER, "context": CARD_ALERT})
    assert refused.status_code == 422
    [attempt] = fake_api.attempts
    call_id = parse_qs(urlsplit(attempt["status_callback"]).query)["outbound"][0]
    assert attempt["url"] == f"{outbound.url}/webhook/twilio/voice?outbound={call_id}"
    report = outbound.get(f"/api/outbound/calls/{call_id}").json()
    assert (report["status"], report["answered"], report["error_code"]) == ("failed", False, 21215)
    assert "call_sid" not in report
