"""Every Twilio route refuses what Twilio did not sign, also behind a proxy."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests
from twilio.request_validator import HMAC_SHA256

from tests.conftest import AUTH_TOKEN, LiveServer
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.bridge import EXTENSION
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.web.signature import SignatureCheck, sign

ROUTES = ["/webhook/twilio/voice", "/webhook/twilio/speech", "/webhook/twilio/fallback",
          "/webhook/twilio/status", "/webhook/twilio/dial-result"]
PARAMS = {"CallSid": "CA" + "1" * 32, "From": "+525512345678", "To": "+525500000000", "CallStatus": "ringing"}


@pytest.mark.parametrize("route", ROUTES)
def test_unsigned_or_forged_requests_are_refused(route: str, bridge_url: str) -> None:
    unsigned = requests.post(bridge_url + route, data=PARAMS, timeout=5)
    forged = requests.post(bridge_url + route, data=PARAMS, timeout=5,
                           headers={"X-Twilio-Signature": sign("not-the-token", bridge_url + route, PARAMS)})
    assert unsigned.status_code == 403 and forged.status_code == 403


def test_a_signature_for_other_parameters_is_refused(bridge_url: str) -> None:
    url = bridge_url + "/webhook/twilio/voice"
    signature = sign(AUTH_TOKEN, url, PARAMS)
    tampered = dict(PARAMS, From="+15550000000")
    assert requests.post(url, data=tampered, headers={"X-Twilio-Signature": signature}, timeout=5).status_code == 403
    assert requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": signature}, timeout=5).status_code == 200


def test_a_signed_query_string_is_part_of_the_url(bridge_url: str) -> None:
    url = bridge_url + "/webhook/twilio/status?attempt=2"
    good = requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, PARAMS)}, timeout=5)
    stripped = sign(AUTH_TOKEN, bridge_url + "/webhook/twilio/status", PARAMS)
    bad = requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": stripped}, timeout=5)
    assert (good.status_code, bad.status_code) == (204, 403)


def test_signature_uses_the_form_not_the_query_values(bridge_url: str) -> None:
    """Parameters smuggled into the query string must not be accepted as signed form fields."""
    url = bridge_url + "/webhook/twilio/voice"
    signature = sign(AUTH_TOKEN, url, PARAMS)
    response = requests.post(url + "?From=%2B15550000000", data=PARAMS, headers={"X-Twilio-Signature": signature},
                             timeout=5)
    assert response.status_code == 403


def test_shared_key_signatures_with_hmac_sha256(reconfigure) -> None:
    phone = reconfigure(shared_keys={"webhooks_sharedkey_1": "shared-secret"})
    url = phone.base_url + "/webhook/twilio/status"
    settings_header = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}
    good = sign("shared-secret", url, PARAMS, algorithm=HMAC_SHA256)
    wrong_key = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_2,algorithm=HMAC_SHA256"}
    assert requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": good, **settings_header},
                         timeout=5).status_code == 204
    assert requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": good, **wrong_key},
                         timeout=5).status_code == 403
    sha1_with_key = sign("shared-secret", url, PARAMS)
    assert requests.post(url, data=PARAMS, headers={"X-Twilio-Signature": sha1_with_key, **settings_header},
                         timeout=5).status_code == 403


def test_behind_a_proxy_the_public_base_url_is_what_twilio_signed(reconfigure) -> None:
    phone = reconfigure(public_base_url="https://ivr.example.com")
    behind_proxy = TwilioPhone(phone.base_url, AUTH_TOKEN, public_base_url="https://ivr.example.com")
    assert behind_proxy.call().state == "gathering"
    assert phone.post(phone.public("/webhook/twilio/voice"), PARAMS).status_code == 403  # signed for the inner URL


def test_forwarded_headers_count_only_from_trusted_proxies(reconfigure) -> None:
    public = "https://ivr.example.com/webhook/twilio/voice"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com",
                 "X-Twilio-Signature": sign(AUTH_TOKEN, public, PARAMS)}
    untrusting = reconfigure()
    trusting = reconfigure(trusted_proxies=1)
    assert requests.post(untrusting.base_url + "/webhook/twilio/voice", data=PARAMS, headers=forwarded,
                         timeout=5).status_code == 403
    assert requests.post(trusting.base_url + "/webhook/twilio/voice", data=PARAMS, headers=forwarded,
                         timeout=5).status_code == 200


def test_validation_switched_off_accepts_and_warns_on_every_request(reconfigure, log_lines) -> None:
    phone = reconfigure(validate_signature=False, twilio_auth_token=None)
    for _ in range(2):
        assert requests.post(phone.base_url + "/webhook/twilio/voice", data=PARAMS, timeout=5).status_code == 200
    events = [line["event"] for line in log_lines()]
    assert events.count("signature.validation_disabled") == 1 and events.count("signature.unchecked") == 2


TWILIO_ROUTES = [routes.VOICE, routes.SPEECH, routes.POLL, routes.DIAL_RESULT, routes.FALLBACK, routes.CALL_STATUS, routes.RELAY_END,
                 routes.WHATSAPP, routes.WHATSAPP_STATUS]
BODIES = {  # what an attacker may post instead of Twilio's form, as requests' keyword arguments
    "form": {"data": PARAMS},
    "json": {"json": PARAMS},
    "multipart": {"files": {key: (None, value) for key, value in PARAMS.items()}},
    "text": {"data": "CallSid=CA1&From=%2B1555", "headers": {"Content-Type": "text/plain"}},
    "none": {},
}


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("route", TWILIO_ROUTES)
def test_every_route_refuses_a_forged_signature_whatever_the_body(route: str, body: str, bridge_url: str) -> None:
    """A body the validator cannot read is a refusal, never an error answer (which would <Dial> the person)."""
    kwargs = BODIES[body]
    headers = {**kwargs.get("headers", {}), "X-Twilio-Signature": "forged+signature="}
    response = requests.post(bridge_url + route, **{**kwargs, "headers": headers}, timeout=5)
    assert_refused(response)


@pytest.mark.parametrize("body", ["json", "multipart", "text"])
@pytest.mark.parametrize("route", TWILIO_ROUTES)
def test_a_body_twilio_never_sends_is_refused_even_signed(route: str, body: str, bridge_url: str) -> None:
    """Signed over the URL alone (or over the fields a multipart body carries): still not a Twilio webhook."""
    kwargs = BODIES[body]
    url = bridge_url + route
    for params in ({}, PARAMS):
        headers = {**kwargs.get("headers", {}), "X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}
        assert requests.post(url, **{**kwargs, "headers": headers}, timeout=5).status_code == 403


@pytest.mark.parametrize("route", TWILIO_ROUTES)
def test_an_empty_body_signed_over_the_url_is_answered(route: str, bridge_url: str) -> None:
    url = bridge_url + route
    response = requests.post(url, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, {})}, timeout=5)
    assert response.status_code in (200, 204)


class ExplodingCheck(SignatureCheck):
    def is_valid(self, request: object) -> bool:
        raise RuntimeError("validator bug")


def test_a_signature_check_that_raises_refuses(settings) -> None:
    app = create_app(settings)
    app.extensions[EXTENSION].signatures = ExplodingCheck(AUTH_TOKEN, {}, None)
    server = LiveServer(app)
    try:
        call = requests.post(server.url + routes.VOICE, data=PARAMS, timeout=5,
                             headers={"X-Twilio-Signature": sign(AUTH_TOKEN, server.url + routes.VOICE, PARAMS)})
        assert_refused(call)
    finally:
        server.stop()


def assert_refused(response: requests.Response) -> None:
    """The signature check's refusal: a plain-text 403, nothing Twilio would run (an apology's <Dial>)."""
    assert response.status_code == 403, response.text
    assert response.headers["Content-Type"].split(";")[0] == "text/plain"


def assert_no_dial(response: requests.Response) -> None:
    """Refused (403, or 405 for a method the route does not take), or TwiML that transfers nobody."""
    if response.status_code == 403:
        assert_refused(response)
    elif response.status_code != 405:
        assert ET.fromstring(response.content).find(".//Dial") is None, response.text


@pytest.mark.parametrize("route", [routes.VOICE, routes.RELAY])
def test_a_forwarded_scheme_that_is_not_http_is_refused_not_an_error(route: str, reconfigure) -> None:
    """Behind TRUSTED_PROXIES a client reaching the bridge directly names the scheme; with an Upgrade header
    that scheme has no ws(s):// twin, and the check refuses rather than failing with a 500."""
    trusting = reconfigure(trusted_proxies=1)
    upgrade = {"X-Forwarded-Proto": "gopher", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    url = trusting.base_url + route
    for signature in ({}, {"X-Twilio-Signature": sign(AUTH_TOKEN, url, {})}):
        if route == routes.RELAY:
            response = requests.get(url, headers={**upgrade, **signature}, timeout=5)
        else:
            response = requests.post(url, data=PARAMS, headers={**upgrade, "Connection": "keep-alive", **signature},
                                     timeout=5)
        assert_refused(response)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_too_big_for_any_webhook_is_refused_before_it_is_read(framing: str, bridge_url: str) -> None:
    """A gigabyte announced (or streamed in chunks) with a forged signature: refused once the body passes what
    a webhook may be, instead of read whole into memory before the signature can be checked."""
    import socket
    from urllib.parse import urlsplit

    if framing == "length":
        head, piece = f"Content-Length: {1 << 30}\r\n", b"Body=" + b"x" * (1 << 20)
    else:
        head, piece = "Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    origin = urlsplit(bridge_url)
    with socket.create_connection((origin.hostname, origin.port), timeout=5) as client:
        client.sendall(f"POST {routes.VOICE} HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                       f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: forged=\r\n"
                       f"{head}\r\n".encode())
        answer = b""
        try:
            for _ in range(16):  # 16 MB at most; then the client waits, with the rest of its gigabyte unsent
                client.sendall(piece)
        except OSError:
            pass  # the bridge answered and closed while the body came
        try:
            while b"\r\n\r\n" not in answer:
                received = client.recv(65536)
                if not received:
                    break
                answer += received
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
