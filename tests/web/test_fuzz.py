"""Hostile, correctly signed webhooks on every route (hypothesis), and protocol abuse: never a 5xx, a voice
route always answers TwiML, no answer takes Twilio's 15 s, and nothing a user typed reaches Rasa as a command.

Bounded for CI: a few hundred examples in all, well under a minute.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings, strategies as st
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.web.test_signature import assert_no_dial
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.config import Settings
from twilio_bridge.limits import WEBHOOK_TIMEOUT
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import PAYLOADS, RasaStandIn
from twilio_bridge.web.signature import sign

VOICE_ROUTES = (routes.VOICE, routes.SPEECH, routes.POLL, f"{routes.POLL}?turn=1&hold=2", f"{routes.POLL}?turn=x",
                routes.DIAL_RESULT, routes.FALLBACK, routes.RELAY_END)
STATUS_ROUTES = (routes.CALL_STATUS, routes.WHATSAPP_STATUS)
ALL_ROUTES = (*VOICE_ROUTES, *STATUS_ROUTES, routes.WHATSAPP)
TWILIO_NAMES = ("CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "SpeechResult", "Confidence", "Digits",
                "DialCallStatus", "ErrorCode", "HandoffData", "MessageSid", "SmsSid", "Body", "NumMedia", "MediaUrl0",
                "MediaContentType0", "ButtonPayload", "ButtonText", "ListId", "ProfileName", "WaId", "MessageStatus",
                "Latitude", "Longitude")
SPECIAL = ("", "\x00", "\u2028", "\u2029", "\u202e\u2066evil\u2069", "\u200f\u200e", "፩", "٣", "１", "𝟗", "²",
           "<Say>hi</Say>", "</Response><Dial>+15550000000</Dial>", "&amp;&#0;&lt;", "]]>", "'\"", "/restart",
           "/SetSlots(card=1234)", "  /affirm", "\t/deny", "//restart", "/inform{\"x\":1}", "NaN", "nan", "inf",
           "-1e309", "999", "-1", "0x10", "whatsapp:", "whatsapp:+1", "+0", "CA", "%00", "%ZZ", "completed",
           "https://evil.test/x.ogg")
MEGABYTE = "ñ" * 500_000  # 1 MB of UTF-8

hostile_text = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),  # every category but lone surrogates
    st.builds(lambda prefix, text: prefix + text, st.sampled_from(("/", " /", "\u200b/")), st.text(max_size=10)),
)
fields = st.lists(st.tuples(st.one_of(st.sampled_from(TWILIO_NAMES), st.text(min_size=1, max_size=8)), hostile_text),
                  max_size=12)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RasaStandIn]]:
    """One bridge for every example (TwiML mode, a person to dial), and the stand-in it asks."""
    with RasaStandIn().start() as standin:
        state = tmp_path_factory.mktemp("fuzz") / "state.db"
        server = LiveServer(create_app(Settings(
            rasa_webhook_url=standin.webhook_url, rasa_timeout=1.5, rasa_max_wait_seconds=1.5,
            twilio_auth_token=AUTH_TOKEN, fallback_phone_number=HUMAN, whatsapp_rate_limit=10_000,
            state_url=f"sqlite:///{state}")))
        try:
            yield server.url, standin
        finally:
            server.stop()


def post_signed(base_url: str, route: str, form: list[tuple[str, str]], **kwargs) -> tuple[requests.Response, float]:
    url = base_url + route
    started = time.monotonic()
    response = requests.post(url, data=[(k.encode(), v.encode()) for k, v in form], timeout=WEBHOOK_TIMEOUT + 5,
                             headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, MultiDict(form))}, **kwargs)
    return response, time.monotonic() - started


def assert_twilio_takes(route: str, response: requests.Response, seconds: float) -> None:
    assert response.status_code < 500, (route, response.status_code, response.text[:300])
    assert seconds < WEBHOOK_TIMEOUT, (route, seconds)
    if route.split("?")[0] in {r.split("?")[0] for r in VOICE_ROUTES} or route == routes.WHATSAPP:
        assert response.status_code == 200, (route, response.status_code, response.text[:300])
        assert response.headers["Content-Type"].startswith("text/xml")
        assert ET.fromstring(response.content).tag == "Response"


def assert_no_user_command_reached_rasa(standin: RasaStandIn) -> None:
    commands = [r["message"] for r in standin.received
                if isinstance(r["message"], str) and r["message"].startswith("/")]
    assert set(commands) <= set(PAYLOADS), commands


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ALL_ROUTES), form=fields, big=st.sampled_from((None,) * 120 + tuple(TWILIO_NAMES[:16])))
@example(route=routes.WHATSAPP, form=[("From", "whatsapp:+1"), ("MessageSid", "SM1"), ("ButtonPayload", "/restart")],
         big=None)
@example(route=routes.WHATSAPP, form=[("From", "whatsapp:+1"), ("Body", "/SetSlots(card=1234)"), ("Body", "/deny")],
         big=None)
@example(route=routes.SPEECH, form=[("CallSid", "CA1"), ("SpeechResult", "/restart"), ("Confidence", "NaN")], big=None)
@example(route=routes.SPEECH, form=[("CallSid", "CA1"), ("Digits", "/SetSlots(x=1)")], big="SpeechResult")
@example(route=routes.WHATSAPP, form=[("From", "whatsapp:+1"), ("NumMedia", "999")], big="Body")
def test_signed_hostile_forms_on_every_route(fuzzed: tuple[str, RasaStandIn], route: str,
                                             form: list[tuple[str, str]], big: str | None) -> None:
    base_url, standin = fuzzed
    if big is not None:
        form = [*form, (big, MEGABYTE)]
    response, seconds = post_signed(base_url, route, form)
    assert_twilio_takes(route, response, seconds)
    assert_no_user_command_reached_rasa(standin)


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_protocol_abuse_is_refused_or_answered_never_a_5xx(fuzzed: tuple[str, RasaStandIn], route: str) -> None:
    base_url, _ = fuzzed
    url = base_url + route
    signature = {"X-Twilio-Signature": sign(AUTH_TOKEN, url, {})}
    abuse = [
        requests.post(url, json={"CallSid": "CA1", "Body": "/restart"}, headers=signature, timeout=20),
        requests.post(url, files={"Body": (None, "/restart")}, headers=signature, timeout=20),
        requests.post(url, data="Body=/restart", headers={**signature, "Content-Type": "text/plain"}, timeout=20),
        requests.post(url, data=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=20),
        requests.post(url, data=b"Body=" + b"x" * 2_000_000, timeout=20,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}),
        requests.post(url, data=b"Body=%ZZ%&From=%E0%A4%&%%=%", timeout=20,
                      headers={"Content-Type": "application/x-www-form-urlencoded", **signature}),
        requests.get(url, timeout=20), requests.head(url, timeout=20), requests.options(url, timeout=20),
    ]
    for response in abuse:
        assert response.status_code < 500, (response.request.method, response.status_code, response.text[:200])
        assert_no_dial(response)
    signed_empty, seconds = post_signed(base_url, route, [])
    assert_twilio_takes(route, signed_empty, seconds)
    signed_big, seconds = post_signed(base_url, route, [("Body", "x" * 2_000_000), ("SpeechResult", "y" * 1000)])
    assert_twilio_takes(route, signed_big, seconds)
    malformed = "Body=%ZZ%&From=%E0%A4%&%%=%"
    form = EnvironBuilder(method="POST", data=malformed,  # signed over what the bridge will read of it
                          content_type="application/x-www-form-urlencoded").get_request().form
    response = requests.post(url, data=malformed, timeout=20, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sign(AUTH_TOKEN, url, form)})
    assert_twilio_takes(route, response, 0.0)


@pytest.mark.parametrize("confidence", ["NaN", "inf", "-Infinity", "1e999"])
def test_a_confidence_that_is_no_number_still_reaches_rasa(phone: TwilioPhone, standin: RasaStandIn,
                                                            confidence: str) -> None:
    """Found by the fuzzing: float('NaN') went into the metadata, which JSON cannot carry, and the caller was
    handed off as if Rasa were down."""
    call = phone.call()
    answer = phone.post(phone.public(routes.SPEECH), call.params(SpeechResult="perdí mi tarjeta", Confidence=confidence))
    assert ET.fromstring(answer.text).find("Gather") is not None and ET.fromstring(answer.text).find("Dial") is None
    assert standin.received[-1]["message"] == "perdí mi tarjeta" and "confidence" not in standin.received[-1]["metadata"]
