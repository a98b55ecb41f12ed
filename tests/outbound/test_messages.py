"""Outbound messages over real HTTP: a template or an SMS through the fake Messages API, retried like replies,
reported by GET, and the notification reaching Rasa with the user's next message only."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from tests.conftest import AUTH_TOKEN, WHATSAPP_FROM
from tests.outbound.conftest import CARD_ALERT, CUSTOMER, SMS_FROM, TEMPLATE, Outbound
from tests.servers import wait_for
from twilio_bridge.config import Settings
from twilio_bridge.outbound import messages
from twilio_bridge.state import StateStore
from twilio_bridge.testing import fake_twilio_api
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import FALLBACK, UNBLOCKED, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

TO = f"whatsapp:{CUSTOMER}"
ALERT_TEMPLATE = {"to": TO, "content_sid": TEMPLATE, "variables": {"1": "1234", "2": 250},
                  "context": CARD_ALERT}


def test_a_template_goes_out_with_its_content_sid_and_variables_and_is_reported_delivered(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    queued = outbound.message(ALERT_TEMPLATE)
    assert queued["status"] == "queued" and queued["id"].startswith("OM")
    [sent] = fake_api.wait_for(1, to=TO)
    assert (sent["from"], sent["content_sid"], sent["content_variables"], sent["body"]) == (
        WHATSAPP_FROM, TEMPLATE, {"1": "1234", "2": "250"}, "")
    assert sent["status_callback"] == f"{outbound.url}/webhook/twilio/whatsapp/status?outbound={queued['id']}"
    report = outbound.status_becomes(queued["status_url"], "delivered")
    assert report["twilio_sid"] == sent["sid"] and report["context"] == CARD_ALERT and report["error_code"] is None


def test_an_sms_comes_from_the_sms_number(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    outbound.message({"to": CUSTOMER, "body": "Su cita es mañana a las 10."})
    [sent] = fake_api.wait_for(1, to=CUSTOMER)
    assert (sent["from"], sent["body"], sent["content_sid"]) == (SMS_FROM, "Su cita es mañana a las 10.", None)


def test_text_outside_the_basic_plane_goes_out_whole(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    """JSON escapes 😀 as the surrogate pair \\ud83d\\ude00: a pair is text, only a lone half is refused."""
    queued = outbound.message({"to": TO, "body": "Su tarjeta 💳 está bloqueada 😀", "context": {"nota": "𝄞"}})
    [sent] = fake_api.wait_for(1, to=TO)
    assert sent["body"] == "Su tarjeta 💳 está bloqueada 😀"
    assert outbound.get(queued["status_url"]).json()["context"] == {"nota": "𝄞"}


def test_a_template_is_retried_through_429_and_500_and_sent_once(outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    fake_api.fail("429")
    fake_api.fail("500")
    queued = outbound.message(ALERT_TEMPLATE)
    [sent] = fake_api.wait_for(1, to=TO)
    assert sent["content_sid"] == TEMPLATE
    assert [attempt["to"] for attempt in fake_api.attempts] == [TO, TO, TO]
    assert outbound.status_becomes(queued["status_url"], "delivered")["twilio_sid"] == sent["sid"]


def test_outside_the_24_hour_window_a_free_text_fails_at_once_with_63016(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    fake_api.fail("63016")
    queued = outbound.message({"to": TO, "body": "¿Sigue interesado en la oferta?"})
    report = outbound.status_becomes(queued["status_url"], "failed")
    assert report["error_code"] == 63016 and len(fake_api.attempts) == 1
    assert fake_api.sent_to(TO) == []


def test_an_undelivered_template_is_reported_failed_with_twilios_code(
        outbound: Outbound, fake_api: FakeTwilioAPI) -> None:
    fake_api.final_status, fake_api.final_error_code = "undelivered", "63024"
    queued = outbound.message(ALERT_TEMPLATE)
    report = outbound.status_becomes(queued["status_url"], "failed")
    assert report["error_code"] == 63024


def test_the_users_next_message_carries_the_notification_and_only_that_one(
        outbound: Outbound, fake_api: FakeTwilioAPI, standin: RasaStandIn) -> None:
    queued = outbound.message(ALERT_TEMPLATE)
    outbound.status_becomes(queued["status_url"], "delivered")
    user = WhatsAppUser(outbound.url, AUTH_TOKEN, number=CUSTOMER)
    user.send("Sí, fui yo")
    replies = fake_api.wait_for(2, to=TO)  # the template, then the assistant's answer
    assert replies[-1]["body"] == UNBLOCKED.format(digits="1 2 3 4")
    notification = standin.received[-1]["metadata"]["last_notification"]
    sent_at = outbound.get(queued["status_url"]).json()["sent_at"]
    assert notification == {"message_id": queued["id"], "content_sid": TEMPLATE, "variables": {"1": "1234", "2": "250"},
                            "context": CARD_ALERT, "sent_at": sent_at}
    user.send("gracias")
    assert fake_api.wait_for(3, to=TO)[-1]["body"] == FALLBACK
    assert "last_notification" not in standin.received[-1]["metadata"]


@pytest.mark.parametrize("callbacks_first", [False, True])
def test_a_notification_twilio_could_not_deliver_rides_on_no_message(
        outbound: Outbound, fake_api: FakeTwilioAPI, standin: RasaStandIn, monkeypatch: pytest.MonkeyPatch,
        callbacks_first: bool) -> None:
    """The customer never saw it, so their next message does not answer it: whether Twilio's `undelivered`
    comes after the worker remembered the notification, or (its callbacks are on their own thread) before."""
    if callbacks_first:
        mark_sent = messages.mark_sent

        def after_twilios_callbacks(store: StateStore, record: dict[str, Any], twilio_sid: str) -> None:
            wait_for(lambda: any(c["sid"] == twilio_sid and c["status"] == "undelivered" for c in fake_api.callbacks))
            mark_sent(store, record, twilio_sid)

        monkeypatch.setattr(messages, "mark_sent", after_twilios_callbacks)
    else:
        record_status = messages.record_status

        def after_the_notification(store: StateStore, message_id: str | None, form: MultiDict[str, str]) -> None:
            if form.get("MessageStatus") == "undelivered":
                wait_for(lambda: "last_notification" in messages.with_last_notification(store, TO, {}))
            record_status(store, message_id, form)

        monkeypatch.setattr(messages, "record_status", after_the_notification)
    fake_api.final_status, fake_api.final_error_code = "undelivered", "63024"
    queued = outbound.message(ALERT_TEMPLATE)
    report = outbound.status_becomes(queued["status_url"], "failed")
    assert report["error_code"] == 63024
    # this message's two: a reply of the test before may still have its callbacks on their way
    wait_for(lambda: sum(callback["sid"] == report["twilio_sid"] for callback in fake_api.callbacks) == 2)
    WhatsAppUser(outbound.url, AUTH_TOKEN, number=CUSTOMER).send("hola")
    assert fake_api.wait_for(2, to=TO)[-1]["body"] == FALLBACK
    assert "last_notification" not in standin.received[-1]["metadata"]


def test_an_sms_reply_answered_in_twiml_carries_the_notification_too(
        start_outbound: Callable[[Settings], Outbound], outbound_settings: Settings, fake_api: FakeTwilioAPI,
        standin: RasaStandIn) -> None:
    """Without TWILIO_WHATSAPP_FROM the replies go back in the webhook's TwiML; the SMS still goes out queued."""
    bridge = start_outbound(dataclasses.replace(outbound_settings, twilio_whatsapp_from=None))
    queued = bridge.message({"to": CUSTOMER, "body": "¿Reconoce un cargo en su tarjeta 1234? Responda SI o NO.",
                             "context": CARD_ALERT})
    bridge.status_becomes(queued["status_url"], "delivered")
    user = WhatsAppUser(bridge.url, AUTH_TOKEN, number=CUSTOMER, bridge_number=SMS_FROM, channel="sms")
    assert [reply.body for reply in user.send("si").replies] == [UNBLOCKED.format(digits="1 2 3 4")]
    notification = standin.received[-1]["metadata"]["last_notification"]
    assert (notification["body"], notification["context"]) == (
        "¿Reconoce un cargo en su tarjeta 1234? Responda SI o NO.", CARD_ALERT)


@pytest.fixture
def refusals(fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> FakeTwilioAPI:
    """The fake Messages API, able to answer two more of Twilio's 400s: 21611, the From number's queue of
    messages is full (it empties: try again later), and 21211, the To number is not a valid one (it never will be)."""
    monkeypatch.setitem(fake_twilio_api.ERRORS, "21611", (
        400, 21611, "This 'From' number has exceeded the maximum number of queued messages"))
    monkeypatch.setitem(fake_twilio_api.ERRORS, "21211", (400, 21211, "The 'To' number is not a valid phone number."))
    monkeypatch.setattr(fake_twilio_api, "FAILURES", (*fake_twilio_api.FAILURES, "21611", "21211"))
    return fake_api


def test_a_sender_queue_full_21611_is_retried_and_the_message_delivered(
        outbound: Outbound, refusals: FakeTwilioAPI) -> None:
    """A 400 that says "not now": the queue's backoff, as for a 429, not a failure at once."""
    refusals.fail("21611")
    queued = outbound.message(ALERT_TEMPLATE)
    report = outbound.status_becomes(queued["status_url"], "delivered")
    [sent] = refusals.sent_to(TO)
    assert [attempt["to"] for attempt in refusals.attempts] == [TO, TO]
    assert report["twilio_sid"] == sent["sid"] and report["error_code"] is None


def test_an_invalid_number_21211_fails_at_once_with_its_code(outbound: Outbound, refusals: FakeTwilioAPI) -> None:
    refusals.fail("21211")
    queued = outbound.message({"to": CUSTOMER, "body": "Su cita es mañana a las 10."})
    report = outbound.status_becomes(queued["status_url"], "failed")
    assert report["error_code"] == 21211 and len(refusals.attempts) == 1
    assert refusals.sent_to(CUSTOMER) == []
