"""The outbound API's front door: off without its token, Bearer auth, one line naming a bad field, Idempotency-Key."""
from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.outbound.conftest import CUSTOMER, TEMPLATE, TOKEN, Outbound
from twilio_bridge.config import Settings
from twilio_bridge.outbound import idempotency, messages
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn

MESSAGES, CALLS = "/api/outbound/messages", "/api/outbound/calls"
TEMPLATE_ORDER = {"to": f"whatsapp:{CUSTOMER}", "content_sid": TEMPLATE, "variables": {"1": "1234"}}


def test_without_the_token_the_api_is_not_there(bridge_url: str) -> None:
    for method, path in (("POST", MESSAGES), ("POST", CALLS), ("GET", f"{MESSAGES}/OM1"), ("GET", f"{CALLS}/OC1")):
        answer = requests.request(method, bridge_url + path, json=TEMPLATE_ORDER, timeout=5,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404, path


@pytest.mark.parametrize("authorization", [None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}",
                                           "Bearer", f"{TOKEN}"])
def test_a_missing_or_wrong_token_gets_401_and_nothing_happens(
        outbound: Outbound, fake_api: FakeTwilioAPI, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path, payload in ((MESSAGES, TEMPLATE_ORDER), (CALLS, {"to": CUSTOMER})):
        answer = requests.post(outbound.url + path, json=payload, headers=headers, timeout=5)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"].startswith("authorization:")
    assert requests.get(outbound.url + f"{MESSAGES}/OM1", headers=headers, timeout=5).status_code == 401
    assert fake_api.attempts == []


BAD_MESSAGES: list[tuple[Any, str]] = [
    ("not json", "request"),
    (["a list"], "request"),
    ({}, "to"),
    ({"to": "5512345678", "body": "hola"}, "to"),
    ({"to": "whatsapp:5512345678", "body": "hola"}, "to"),
    ({"to": "whatsapp:+5٢١٥٥١٢٣٤٥٦٧٨", "body": "hola"}, "to"),  # Arabic-Indic digits
    ({"to": "+5２１５５１２３４５６７８", "body": "hola"}, "to"),  # fullwidth digits
    ({"to": f"whatsapp:{CUSTOMER}"}, "content_sid"),
    ({**TEMPLATE_ORDER, "body": "hola"}, "content_sid"),
    ({**TEMPLATE_ORDER, "content_sid": "HX123"}, "content_sid"),
    ({**TEMPLATE_ORDER, "content_sid": 42}, "content_sid"),
    ({**TEMPLATE_ORDER, "variables": ["1234"]}, "variables"),
    ({**TEMPLATE_ORDER, "variables": {"1": {"nested": True}}}, "variables"),
    ({**TEMPLATE_ORDER, "variables": {"1": ""}}, "variables"),
    ({"to": f"whatsapp:{CUSTOMER}", "body": "hola", "variables": {"1": "x"}}, "variables"),
    ({"to": f"whatsapp:{CUSTOMER}", "body": "  "}, "body"),
    ({"to": f"whatsapp:{CUSTOMER}", "body": "a" * 1601}, "body"),
    ({**TEMPLATE_ORDER, "context": "card 1234"}, "context"),
    ({**TEMPLATE_ORDER, "context": {"notes": "x" * 5000}}, "context"),
    ({**TEMPLATE_ORDER, "contentSid": TEMPLATE}, "contentSid"),
    # A lone surrogate (half of an emoji's \ud83d\ude00) is valid JSON but no text: it cannot be sent as UTF-8.
    ({"to": f"whatsapp:{CUSTOMER}", "body": "hola \ud83d"}, "body"),
    ({**TEMPLATE_ORDER, "variables": {"1": "\udc00"}}, "variables"),
    ({**TEMPLATE_ORDER, "variables": {"\ud800": "1234"}}, "variables"),
    ({**TEMPLATE_ORDER, "context": {"n": "\ud800"}}, "context"),
    ({**TEMPLATE_ORDER, "context": {"a": [{"\ud800": 1}]}}, "context"),
    ({**TEMPLATE_ORDER, "\ud800": 1}, "request"),
]
BAD_CALLS: list[tuple[Any, str]] = [
    ({}, "to"),
    ({"to": f"whatsapp:{CUSTOMER}"}, "to"),
    ({"to": "55 1234 5678"}, "to"),
    ({"to": "+5٢١٥٥١٢٣٤٥٦٧٨"}, "to"),
    ({"to": CUSTOMER, "context": [1, 2]}, "context"),
    ({"to": CUSTOMER, "machine_detection": True}, "machine_detection"),
    ({"to": CUSTOMER, "machine_detection": "enable"}, "machine_detection"),
    ({"to": CUSTOMER, "url": "https://evil.example/twiml"}, "url"),
    ({"to": CUSTOMER, "context": {"n": ["\ud800"]}}, "context"),
]


@pytest.mark.parametrize("path, payload, field", [(MESSAGES, p, f) for p, f in BAD_MESSAGES]
                         + [(CALLS, p, f) for p, f in BAD_CALLS])
def test_bad_input_gets_400_with_one_line_naming_the_field(
        outbound: Outbound, fake_api: FakeTwilioAPI, path: str, payload: Any, field: str) -> None:
    if isinstance(payload, str):
        answer = requests.post(outbound.url + path, data=payload, timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    else:
        answer = outbound.post(path, payload)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith(f"{field}: ") and "\n" not in error
    assert fake_api.attempts == []


@pytest.mark.parametrize("path, text, field", [
    (MESSAGES, f'{{"to": "whatsapp:{CUSTOMER}", "content_sid": "{TEMPLATE}", "variables": {{"1": NaN}}}}', "variables"),
    (MESSAGES, f'{{"to": "whatsapp:{CUSTOMER}", "content_sid": "{TEMPLATE}", "variables": {{"1": -1e999}}}}',
     "variables"),
    (MESSAGES, f'{{"to": "{CUSTOMER}", "body": "hola", "context": {{"amount": Infinity}}}}', "context"),
    (CALLS, f'{{"to": "{CUSTOMER}", "context": {{"amounts": [250, 1e999]}}}}', "context"),
])
def test_a_number_that_is_not_finite_gets_400_naming_the_field(
        outbound: Outbound, fake_api: FakeTwilioAPI, path: str, text: str, field: str) -> None:
    """Python's parser reads NaN, Infinity and 1e999; sent on, they would be "nan" to Twilio and invalid JSON to GET."""
    answer = outbound.post_text(path, text)
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{field}: numbers must be finite")
    assert fake_api.attempts == [] and fake_api.calls == []


@pytest.mark.parametrize("path, to, levels, field", [
    (MESSAGES, f"whatsapp:{CUSTOMER}", 100_000, "request"),  # past the parser's recursion limit
    (CALLS, CUSTOMER, 100, "context"),  # read; near the parser's limit, too deep for json.dumps to write again
    (MESSAGES, f"whatsapp:{CUSTOMER}", 32, "context"),  # 33 levels: the context's object is the first
])
def test_json_nested_too_deeply_gets_400_naming_where(
        outbound: Outbound, fake_api: FakeTwilioAPI, path: str, to: str, levels: int, field: str) -> None:
    content = f', "content_sid": "{TEMPLATE}"' if path == MESSAGES else ""
    answer = outbound.post_text(path, f'{{"to": "{to}"{content}, "context": {{"a": {"[" * levels}{"]" * levels}}}}}')
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{field}: ")
    assert fake_api.attempts == [] and fake_api.calls == []


def test_a_context_32_levels_deep_is_taken(outbound: Outbound) -> None:
    nested: Any = "fondo"
    for _ in range(31):  # the context's own object is the first level
        nested = [nested]
    assert outbound.post(CALLS, {"to": CUSTOMER, "context": {"a": nested}}).status_code == 202


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_of_1_mib_or_more_gets_413_and_is_read_no_further(outbound: Outbound, fake_api: FakeTwilioAPI,
                                                   chunked: bool) -> None:
    body = b'{"to": "' + CUSTOMER.encode() + b'", "body": "' + b"a" * (1024 * 1024) + b'"}'
    data = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    answer = requests.post(outbound.url + MESSAGES, data=data, timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"] == f"POST {MESSAGES}: the body must be under 1024 KiB"
    assert fake_api.attempts == []


def test_an_idempotency_key_too_long_is_named(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    answer = outbound.post(MESSAGES, TEMPLATE_ORDER, key="k" * 256)
    assert answer.status_code == 400 and answer.json()["error"].startswith("Idempotency-Key: ")


def test_a_channel_without_its_sender_is_refused_naming_the_setting(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, fake_api: FakeTwilioAPI) -> None:
    bridge = start_outbound(dataclasses.replace(outbound_settings, twilio_sms_from=None, twilio_voice_from=None))
    sms = bridge.post(MESSAGES, {"to": CUSTOMER, "body": "Su cita es mañana."})
    call = bridge.post(CALLS, {"to": CUSTOMER})
    assert (sms.status_code, sms.json()["error"]) == (400, "to: this bridge has no TWILIO_SMS_FROM to send SMS from")
    assert (call.status_code, call.json()["error"]) == (400, "to: this bridge has no TWILIO_VOICE_FROM to call from")


def test_a_repeated_message_request_answers_the_first_202_again_and_sends_once(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    first = outbound.post(MESSAGES, TEMPLATE_ORDER, key="reminder-42")
    again = outbound.post(MESSAGES, TEMPLATE_ORDER, key="reminder-42")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = outbound.message({"to": f"whatsapp:{CUSTOMER}", "body": "después"})
    assert other["id"] != first.json()["id"]
    # One lane per user, in order: had the repeat queued a second message, it would come before this one.
    sent = fake_api.wait_for(2, to=f"whatsapp:{CUSTOMER}")
    assert [(m["content_sid"], m["body"]) for m in sent] == [(TEMPLATE, ""), (None, "después")]


@pytest.mark.parametrize("path, payload", [(MESSAGES, {**TEMPLATE_ORDER, "context": {"n": "\ud800"}}),
                                           (CALLS, {"to": CUSTOMER, "context": {"n": "\ud800"}})])
def test_a_lone_surrogate_with_an_idempotency_key_is_refused_and_the_key_stays_free(
        outbound: Outbound, fake_api: FakeTwilioAPI, path: str, payload: dict[str, Any]) -> None:
    refused = outbound.post(path, payload, key="alert-9")
    assert refused.status_code == 400 and refused.json()["error"].startswith("context: ")
    assert outbound.post(path, {**payload, "context": {"n": "\ud83d\ude00"}}, key="alert-9").status_code == 202


def test_a_key_used_again_once_its_memory_lapsed_sends_a_new_message(
        outbound: Outbound, fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is remembered for a day, the message's record for a week: the new message is not the old one."""
    monkeypatch.setattr(idempotency, "KEEP_SECONDS", 1.0)
    first = outbound.message(TEMPLATE_ORDER, key="reminder-43")
    outbound.status_becomes(first["status_url"], "delivered")
    time.sleep(1.5)
    again = outbound.post(MESSAGES, TEMPLATE_ORDER, key="reminder-43")
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first["id"]
    second = fake_api.wait_for(2, to=TEMPLATE_ORDER["to"])[-1]
    assert outbound.status_becomes(again.json()["status_url"], "delivered")["twilio_sid"] == second["sid"]


def test_a_key_used_again_once_its_memory_lapsed_places_a_call_reported_on_its_own(
        outbound: Outbound, fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "KEEP_SECONDS", 1.0)
    first = outbound.call({"to": CUSTOMER}, key="alert-10")
    fake_api.end_call(first["call_sid"], "no-answer")
    time.sleep(1.5)
    again = outbound.call({"to": CUSTOMER}, key="alert-10")
    assert again["id"] != first["id"] and again["call_sid"] != first["call_sid"]
    report = outbound.get(again["status_url"]).json()
    assert (report["status"], report["answered"], report["call_sid"]) == ("queued", False, again["call_sid"])
    assert outbound.get(first["status_url"]).json()["status"] == "no-answer"


def test_a_retry_after_a_crash_queues_nothing_twice(
        outbound: Outbound, fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message was queued, then the process failed before the 202 was kept: the retry acts under the same id."""
    queue_message = messages.queue_message

    def queue_then_crash(*args: Any) -> bool:
        queue_message(*args)
        raise RuntimeError("the worker died here")

    monkeypatch.setattr(messages, "queue_message", queue_then_crash)
    assert outbound.post(MESSAGES, TEMPLATE_ORDER, key="reminder-44").status_code == 500
    monkeypatch.setattr(messages, "queue_message", queue_message)
    retried = outbound.message(TEMPLATE_ORDER, key="reminder-44")
    outbound.status_becomes(retried["status_url"], "delivered")
    assert len(fake_api.sent_to(TEMPLATE_ORDER["to"])) == 1


def test_a_key_reused_for_another_request_is_refused(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    assert outbound.post(MESSAGES, TEMPLATE_ORDER, key="k-1").status_code == 202
    changed = outbound.post(MESSAGES, {**TEMPLATE_ORDER, "variables": {"1": "9999"}}, key="k-1")
    assert changed.status_code == 422 and changed.json()["error"].startswith("Idempotency-Key: ")


def test_a_repeated_call_request_places_one_call(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    first = outbound.post(CALLS, {"to": CUSTOMER}, key="alert-7")
    again = outbound.post(CALLS, {"to": CUSTOMER}, key="alert-7")
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert [call["sid"] for call in fake_api.calls] == [first.json()["call_sid"]]


def test_a_failed_call_request_is_not_remembered_and_the_same_key_may_try_again(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    fake_api.fail("500")
    failed = outbound.post(CALLS, {"to": CUSTOMER}, key="alert-8")
    assert failed.status_code == 502 and failed.json()["error"].startswith("twilio: ")
    fake_api.fail("21215")
    refused = outbound.post(CALLS, {"to": CUSTOMER}, key="alert-8")
    assert refused.status_code == 422 and refused.json()["twilio_code"] == 21215
    placed = outbound.post(CALLS, {"to": CUSTOMER}, key="alert-8")
    assert placed.status_code == 202 and [c["sid"] for c in fake_api.calls] == [placed.json()["call_sid"]]


def test_an_unknown_id_is_404(outbound: Outbound) -> None:
    assert outbound.get(f"{MESSAGES}/OM0").status_code == 404
    assert outbound.get(f"{CALLS}/OC0").json()["error"].startswith("call_id: ")


def test_only_an_id_the_api_minted_is_looked_up(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    """An id is part of state store keys: `<id>:twilio:sent` named a status's key, and GET answered 500 (a message)
    or made a call's record up from it (200)."""
    message = outbound.message(TEMPLATE_ORDER)
    outbound.status_becomes(message["status_url"], "delivered")
    call = outbound.call({"to": CUSTOMER})
    fake_api.end_call(call["call_sid"], "no-answer")
    for crafted in (f"{MESSAGES}/{message['id']}:twilio:sent", f"{MESSAGES}/{message['id']}:twilio:delivered",
                    f"{CALLS}/{call['id']}:status:no-answer", f"{CALLS}/{call['id'].upper()}"):
        answer = outbound.get(crafted)
        assert answer.status_code == 404, crafted
        assert answer.json()["error"].endswith("no outbound message has this id" if MESSAGES in crafted
                                               else "no outbound call has this id")
    assert outbound.get(message["status_url"]).json()["status"] == "delivered"


def test_a_status_callback_naming_a_status_key_is_taken_as_any_calls(
        outbound: Outbound, fake_api: FakeTwilioAPI, customer_phone: TwilioPhone, standin: RasaStandIn) -> None:
    """The callback's `outbound` id is part of a key too: that status was read as the call's record, which failed
    (KeyError), and the call's Rasa session was never ended."""
    call = outbound.call({"to": CUSTOMER})
    fake_api.end_call(call["call_sid"], "no-answer")
    params = {"CallSid": call["call_sid"], "AccountSid": customer_phone.account_sid, "CallStatus": "completed"}
    crafted = customer_phone.post(f"{outbound.url}/webhook/twilio/status?outbound={call['id']}:status:no-answer",
                                  params)
    assert crafted.status_code == 204 and [turn["message"] for turn in standin.received] == ["/session_end"]
    assert outbound.get(call["status_url"]).json()["status"] == "no-answer"


@pytest.mark.parametrize("method, path, status, allowed", [
    ("GET", MESSAGES, 405, "POST"), ("DELETE", f"{CALLS}/OC1", 405, "GET"), ("GET", "/api/outbound/nothing", 404, None),
    ("POST", "/api/outbound", 404, None), ("POST", f"{MESSAGES}/OM1/cancel", 404, None),
])
def test_a_method_or_path_the_api_does_not_serve_is_refused_in_json(
        outbound: Outbound, method: str, path: str, status: int, allowed: str | None) -> None:
    answer = requests.request(method, outbound.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"].startswith(f"{method} {path}: ")
    if allowed:
        assert allowed in answer.headers["Allow"].split(", ")
    elsewhere = requests.get(outbound.url + "/not-the-api", timeout=5)
    assert elsewhere.status_code == 404 and elsewhere.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_concurrent_repeats_place_one_call_on_either_state_store(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, fake_api: FakeTwilioAPI,
        request: pytest.FixtureRequest, backend: str) -> None:
    """Eight workers' threads get the same request at once: one claims the key, the others replay it or wait."""
    settings = outbound_settings
    if backend == "redis":
        settings = dataclasses.replace(settings, state_url=request.getfixturevalue("redis_url"))
    bridge = start_outbound(settings)
    key = f"alert-{secrets.token_hex(8)}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: bridge.post(CALLS, {"to": CUSTOMER}, key=key), range(8)))
    assert len(fake_api.calls) == 1
    assert {answer.status_code for answer in answers} <= {202, 409}
    placed = [answer.json() for answer in answers if answer.status_code == 202]
    assert placed and all(body["call_sid"] == fake_api.calls[0]["sid"] for body in placed)
