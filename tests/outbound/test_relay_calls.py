"""A call the bridge placed, answered in relay mode: its context opens the Rasa session over the WebSocket too."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tests.conftest import AUTH_TOKEN
from tests.outbound.conftest import CARD_ALERT, CUSTOMER, VOICE_FROM, Outbound
from tests.servers import wait_for
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.relay import RelayCall
from twilio_bridge.testing.standin import CARD_ALERT as SPOKEN_ALERT
from twilio_bridge.testing.standin import RasaStandIn


def test_an_outbound_call_in_relay_mode_starts_with_its_context(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, fake_api: FakeTwilioAPI,
        standin: RasaStandIn) -> None:
    outbound = start_outbound(dataclasses.replace(outbound_settings, voice_mode="relay"))
    placed = outbound.call({"to": CUSTOMER, "context": CARD_ALERT})
    [placed_call] = fake_api.calls
    call = RelayCall(TwilioPhone(outbound.url, AUTH_TOKEN), VOICE_FROM, CUSTOMER, call_sid=placed["call_sid"],
                     direction="outbound-api", status_callback=placed_call["status_callback"])
    assert call.start().text.startswith(SPOKEN_ALERT.format(digits="1 2 3 4"))
    start = standin.received[0]
    assert (start["sender"], start["message"]) == (placed["call_sid"], "/session_start")
    assert start["metadata"]["direction"] == "outbound-api" and start["metadata"]["outbound_context"] == CARD_ALERT
    assert call.hangup() == 204
    wait_for(lambda: standin.received[-1]["message"] == "/session_end")
    assert outbound.status_becomes(placed["status_url"], "completed")["answered"] is True
