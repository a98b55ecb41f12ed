"""GET /metrics: what the bridge counts, and who may read it."""
from __future__ import annotations

import dataclasses

import pytest
import requests

from tests.conftest import AUTH_TOKEN
from tests.metrics_tools import grew, scrape, value
from tests.servers import wait_for
from tests.whatsapp.test_rest import Serve, chat
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.web.operators import bearer_matches


def test_a_call_is_counted_by_route_outcome_ending_and_rasa_latency(phone: TwilioPhone, standin: RasaStandIn) -> None:
    before = scrape(phone.base_url)
    call = phone.call()
    call.say("quiero hablar con un agente")
    after = scrape(phone.base_url)
    assert grew(before, after, "twilio_bridge_webhooks_total", route="/webhook/twilio/voice", outcome="gather") == 1
    assert grew(before, after, "twilio_bridge_webhooks_total", route="/webhook/twilio/speech", outcome="handoff") == 1
    assert grew(before, after, "twilio_bridge_call_endings_total", ending="handoff", reason="assistant") == 1
    assert grew(before, after, "twilio_bridge_rasa_seconds_count", result="ok") == 2
    assert grew(before, after, "twilio_bridge_webhook_seconds_count", route="/webhook/twilio/speech") == 1


def test_failures_and_refusals_are_counted(phone: TwilioPhone, standin: RasaStandIn) -> None:
    before = scrape(phone.base_url)
    standin.mode = "error500"
    phone.call()
    requests.post(phone.base_url + "/webhook/twilio/speech", data={"CallSid": "CAforged"}, timeout=5)
    after = scrape(phone.base_url)
    assert grew(before, after, "twilio_bridge_call_endings_total", ending="handoff", reason="rasa_failed") == 1
    assert grew(before, after, "twilio_bridge_rasa_seconds_count", result="status") == 1
    assert grew(before, after, "twilio_bridge_signature_rejections_total", route="/webhook/twilio/speech") == 1


def test_metrics_are_refused_through_a_proxy_without_a_token(bridge_url: str) -> None:
    response = requests.get(bridge_url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
    assert response.status_code == 403


@pytest.mark.parametrize("forwarded", [{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com"},
                                       {"X-Forwarded-Host": "ivr.example.com"}, {"X-Forwarded-Proto": "https"}])
def test_a_proxy_that_names_only_the_public_scheme_and_host_is_a_proxy_too(forwarded: dict, reconfigure) -> None:
    """TRUSTED_PROXIES asks of a proxy X-Forwarded-Proto and X-Forwarded-Host; one on this host that sends only
    those (no X-Forwarded-For) passes on the internet's requests from 127.0.0.1: not an operator's."""
    base = reconfigure(trusted_proxies=1).base_url
    assert requests.get(base + "/metrics", headers=forwarded, timeout=5).status_code == 403
    assert requests.get(base + "/health", headers=forwarded, timeout=5).json() == {"status": "ok"}
    assert scrape(base)  # this host, through no proxy: still the operator


def test_with_a_token_only_its_bearer_reads_the_metrics(reconfigure) -> None:
    base = reconfigure(metrics_token="s3cret-scrape-token").base_url
    assert requests.get(base + "/metrics", timeout=5).status_code == 403
    assert requests.get(base + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 403
    assert scrape(base, Authorization="Bearer s3cret-scrape-token", **{"X-Forwarded-For": "203.0.113.9"})


@pytest.mark.parametrize(("header", "expected", "matches"), [
    ("Bearer s3cret-scrape-token", "s3cret-scrape-token", True),
    ("bearer  s3cret-scrape-token ", "s3cret-scrape-token", True),
    ("Bearer s3cret-scrape-tokens", "s3cret-scrape-token", False),
    ("Basic s3cret-scrape-token", "s3cret-scrape-token", False),
    ("s3cret-scrape-token", "s3cret-scrape-token", False),
    ("Bearer ", "", False),
    ("Bearer ", None, False),
    ("Bearer \u00e9t\u00e9", "s3cret-scrape-token", False),
])
def test_one_bearer_check_serves_metrics_health_and_the_outbound_api(header: str, expected: str | None,
                                                                    matches: bool) -> None:
    assert bearer_matches(header, expected) is matches


def test_the_health_summary_says_how_metrics_are_protected_without_the_token(reconfigure) -> None:
    base = reconfigure(metrics_token="s3cret-scrape-token").base_url
    response = requests.get(base + "/health", headers={"Authorization": "Bearer s3cret-scrape-token"}, timeout=5)
    assert response.json()["config"]["metrics_protected_by"] == "token"
    body = response.text
    assert '"metrics_protected_by":"token"' in body.replace(" ", "") and "s3cret" not in body
    assert AUTH_TOKEN not in body


def test_whatsapp_deliveries_are_counted_by_result(serve: Serve, rest_settings: Settings,
                                                   fake_api: FakeTwilioAPI) -> None:
    url = serve(dataclasses.replace(rest_settings, whatsapp_retry_window=0.3)).url  # one retry, then expired
    before = scrape(url)

    def counted(result: str) -> float:
        return grew(before, scrape(url), "twilio_bridge_whatsapp_deliveries_total", result=result)

    fake_api.fail("429", times=1)
    retried_then_sent = chat(url)
    retried_then_sent.send("perdí mi tarjeta")
    assert fake_api.wait_for(1, to=retried_then_sent.address)
    fake_api.fail("63016", times=1)
    chat(url).send("perdí mi tarjeta")
    wait_for(lambda: counted("failed") == 1)
    fake_api.fail("500", times=None)
    chat(url).send("perdí mi tarjeta")
    wait_for(lambda: counted("expired") == 1)
    assert {result: counted(result) for result in ("sent", "retried", "failed", "expired")} == {
        "sent": 1, "retried": 2, "failed": 1, "expired": 1}
    assert len(fake_api.messages) == 1


def test_whatsapp_queue_depth_is_the_shared_queues_length_at_scrape_time(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    standin.delay = 0.5
    user = chat(rest_url)
    for text in ("hola", "hola otra vez", "¿hay alguien?"):  # one user's lane: one at a time, in order
        user.send(text)
    assert value(scrape(rest_url), "twilio_bridge_whatsapp_queue_depth") == 3
    fake_api.wait_for(1, to=user.address)
    wait_for(lambda: value(scrape(rest_url), "twilio_bridge_whatsapp_queue_depth") == 2)
    fake_api.wait_for(3, to=user.address)
    wait_for(lambda: value(scrape(rest_url), "twilio_bridge_whatsapp_queue_depth") == 0)


def test_whatsapp_status_callbacks_are_counted_by_status(rest_url: str) -> None:
    user = chat(rest_url)
    before = scrape(rest_url)
    for sid, status in (("SM1", "delivered"), ("SM2", "read"), ("SM3", "undelivered"), ("SM4", "mystery")):
        assert user.report_status(sid, status, "63016" if status == "undelivered" else None) == 204
    after = scrape(rest_url)
    assert {status: grew(before, after, "twilio_bridge_whatsapp_statuses_total", status=status)
            for status in ("delivered", "read", "undelivered", "failed", "other")} == {
        "delivered": 1, "read": 1, "undelivered": 1, "failed": 0, "other": 1}
