"""The bridge with the outbound API on, over real HTTP: its public URL is its own (Twilio's callbacks, posted
by the fake Twilio API, reach it), replies and outbound messages go through the fake Messages API."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from tests.conftest import AUTH_TOKEN, LiveServer
from tests.servers import free_port, wait_for
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone

TOKEN = "outbound-token-0123456789abcdef"
SMS_FROM = "+14155550100"
VOICE_FROM = "+14155550199"
CUSTOMER = "+5215512345678"
TEMPLATE = "HX" + "b" * 32
CARD_ALERT = {"reason": "suspicious_charge", "card_last_four": "1234", "merchant": "Tienda Ejemplo"}


@dataclass
class Outbound:
    """The bridge's outbound API as the operator's systems call it."""
    url: str
    token: str = TOKEN

    def post(self, path: str, payload: Any, key: str | None = None, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return requests.post(self.url + path, json=payload, headers=headers, timeout=10)

    def post_text(self, path: str, text: str) -> requests.Response:
        """JSON as written: what `json=` refuses to send (NaN, Infinity) or cannot write (nesting past the stack)."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        return requests.post(self.url + path, data=text.encode(), headers=headers, timeout=10)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def message(self, payload: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        answer = self.post("/api/outbound/messages", payload, key)
        assert answer.status_code == 202, answer.text
        return answer.json()

    def call(self, payload: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        answer = self.post("/api/outbound/calls", payload, key)
        assert answer.status_code == 202, answer.text
        return answer.json()

    def status_becomes(self, status_url: str, status: str) -> dict[str, Any]:
        """GET the status until it says `status` (Twilio's callbacks come on their own time)."""
        wait_for(lambda: self.get(status_url).json()["status"] == status, 10)
        return self.get(status_url).json()


@pytest.fixture
def outbound_settings(rest_settings: Settings) -> Settings:
    return dataclasses.replace(rest_settings, outbound_api_token=TOKEN, twilio_sms_from=SMS_FROM,
                               twilio_voice_from=VOICE_FROM, whatsapp_retry_window=30.0)


@pytest.fixture
def start_outbound(serve: Callable[..., LiveServer]) -> Callable[[Settings], Outbound]:
    """A bridge whose PUBLIC_BASE_URL is its own address, so Twilio's callbacks (from the fake) reach it."""

    def start(settings: Settings) -> Outbound:
        port = free_port()
        return Outbound(serve(dataclasses.replace(settings, public_base_url=f"http://127.0.0.1:{port}"), port).url)

    return start


@pytest.fixture
def outbound(start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings,
             fake_api: FakeTwilioAPI) -> Outbound:
    return start_outbound(outbound_settings)


@pytest.fixture
def customer_phone(outbound: Outbound) -> TwilioPhone:
    """Twilio's side of the calls the bridge places, signed for the bridge's public URL."""
    return TwilioPhone(outbound.url, AUTH_TOKEN)


TwilioSide = Callable[[dict[str, Any]], None]


@pytest.fixture
def before_the_calls_api_answers(fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch
                                 ) -> Iterator[Callable[[TwilioSide], None]]:
    """`before_the_calls_api_answers(twilio)`: the fake Calls API runs `twilio(call)` (the call as it recorded it,
    its Url and StatusCallback included) after it placed a call and before it answers the create request.
    Twilio's callbacks for a call are on their own time: the first status callbacks, and a quickly answered
    call's voice webhook, may reach the bridge before the Calls API's answer does. What `twilio` raises fails
    the test (it runs on the fake's thread, whose error would otherwise only be a 500 to the bridge)."""
    raised: list[BaseException] = []

    def install(twilio: TwilioSide) -> None:
        place_call = fake_api._place_call

        def twilio_first(request: Request) -> Response:
            answer = place_call(request)
            if answer.status_code == 201:
                sid = json.loads(answer.get_data())["sid"]
                try:
                    twilio(next(call for call in fake_api.calls if call["sid"] == sid))
                except BaseException as exc:  # raised below, in the test's thread
                    raised.append(exc)
            return answer

        monkeypatch.setattr(fake_api, "_place_call", twilio_first)

    yield install
    if raised:
        raise raised[0]
