"""GET /metrics: what the bridge counts, and who may read it."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from twilio_bridge.phone import TwilioPhone
from twilio_bridge.standin import RasaStandIn

from .conftest import AUTH_TOKEN


def scrape(base_url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(base_url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_call_is_counted_by_route_outcome_ending_and_rasa_latency(phone: TwilioPhone, standin: RasaStandIn) -> None:
    before = scrape(phone.base_url)
    call = phone.call()
    call.say("quiero hablar con un agente")
    after = scrape(phone.base_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("twilio_bridge_webhooks_total", route="/webhook/twilio/voice", outcome="gather") == 1
    assert grew("twilio_bridge_webhooks_total", route="/webhook/twilio/speech", outcome="handoff") == 1
    assert grew("twilio_bridge_call_endings_total", ending="handoff", reason="assistant") == 1
    assert grew("twilio_bridge_rasa_seconds_count", result="ok") == 2
    assert grew("twilio_bridge_webhook_seconds_count", route="/webhook/twilio/speech") == 1


def test_failures_and_refusals_are_counted(phone: TwilioPhone, standin: RasaStandIn) -> None:
    before = scrape(phone.base_url)
    standin.mode = "error500"
    phone.call()
    requests.post(phone.base_url + "/webhook/twilio/speech", data={"CallSid": "CAforged"}, timeout=5)
    after = scrape(phone.base_url)
    assert value(after, "twilio_bridge_call_endings_total", ending="handoff", reason="rasa_failed") - value(
        before, "twilio_bridge_call_endings_total", ending="handoff", reason="rasa_failed") == 1
    assert value(after, "twilio_bridge_rasa_seconds_count", result="status") - value(
        before, "twilio_bridge_rasa_seconds_count", result="status") == 1
    assert value(after, "twilio_bridge_signature_rejections_total", route="/webhook/twilio/speech") - value(
        before, "twilio_bridge_signature_rejections_total", route="/webhook/twilio/speech") == 1


def test_metrics_are_refused_through_a_proxy_without_a_token(bridge_url: str) -> None:
    response = requests.get(bridge_url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
    assert response.status_code == 403


def test_with_a_token_only_its_bearer_reads_the_metrics(reconfigure) -> None:
    base = reconfigure(metrics_token="s3cret-scrape-token").base_url
    assert requests.get(base + "/metrics", timeout=5).status_code == 403
    assert requests.get(base + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 403
    assert scrape(base, Authorization="Bearer s3cret-scrape-token", **{"X-Forwarded-For": "203.0.113.9"})


def test_the_health_summary_says_how_metrics_are_protected_without_the_token(reconfigure) -> None:
    base = reconfigure(metrics_token="s3cret-scrape-token").base_url
    body = requests.get(base + "/health", timeout=5).text
    assert '"metrics_protected_by":"token"' in body.replace(" ", "") and "s3cret" not in body
    assert AUTH_TOKEN not in body
