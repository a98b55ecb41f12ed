"""'typing…' (REST mode): a worker that takes a WhatsApp message posts Twilio's typing indicator for it,
once the webhooks in hand have answered; SMS gets none, and a typing indicator that fails never keeps the
reply from going out."""
from __future__ import annotations

from typing import Callable

import pytest

from twilio_bridge.bridge import EXTENSION
from twilio_bridge.config import Settings
from twilio_bridge.delivery import workers as workers_module
from twilio_bridge.delivery.workers import WebhooksFirst
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen
from twilio_bridge.testing.standin import ASK_DIGITS, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.twilio_rest import twilio_client
from twilio_bridge.whatsapp.typing_indicator import TypingIndicator

from ..conftest import AUTH_TOKEN, LiveServer
from ..metrics_tools import grew, scrape
from ..servers import wait_for
from .test_twiml import new_number


def test_a_whatsapp_message_taken_by_a_worker_shows_typing_for_that_message(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = WhatsAppUser(rest_url, AUTH_TOKEN, number=new_number())
    posted = user.send("perdí mi tarjeta")
    assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == ASK_DIGITS
    assert fake_api.wait_until(lambda api: api.typing)
    assert [(t["message_id"], t["channel"]) for t in fake_api.typing] == [(posted.sid, "whatsapp")]


def test_sms_gets_no_typing_indicator(serve: Callable[[Settings], LiveServer], rest_settings: Settings,
                                      standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    server = serve(rest_settings)
    before = scrape(server.url)
    user = WhatsAppUser(server.url, AUTH_TOKEN, number=new_number(), channel="sms")
    user.send("perdí mi tarjeta")
    assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == ASK_DIGITS
    typing_posts_finished(server)
    assert fake_api.typing == []
    assert all(grew(before, scrape(server.url), "twilio_bridge_whatsapp_typing_total", result=result) == 0
               for result in ("shown", "failed"))


def typing_posts_finished(server: LiveServer) -> None:
    """Wait for every typing post this bridge started: they run on a pool of their own, so the reply
    going out says nothing about them. The pool is the delivery workers' (LaneWorkers → Courier)."""
    courier = server.app.extensions[EXTENSION].workers.handle.__self__
    courier.native.typing.pool.shutdown(wait=True)


def test_a_failing_typing_indicator_is_counted_and_the_reply_still_goes_out(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    before = scrape(rest_url)
    for failure in ("500", "drop"):
        fake_api.break_api("typing", failure)
        user = WhatsAppUser(rest_url, AUTH_TOKEN, number=new_number())
        user.send("perdí mi tarjeta")
        assert as_seen(fake_api.wait_for(1, to=user.address)[0]) == ASK_DIGITS
    assert fake_api.typing == []
    fake_api.break_api("typing", None)
    user = WhatsAppUser(rest_url, AUTH_TOKEN, number=new_number())
    posted = user.send("perdí mi tarjeta")
    assert fake_api.wait_until(lambda api: api.typing)
    assert [t["message_id"] for t in fake_api.typing] == [posted.sid]
    counted = {"failed": 2, "shown": 1}
    wait_for(lambda: all(grew(before, scrape(rest_url), "twilio_bridge_whatsapp_typing_total", result=result)
                                == count for result, count in counted.items()))


def test_typing_waits_for_the_webhooks_in_hand(fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "WEBHOOKS_FIRST", 30.0)  # long enough that only the webhook's end can decide
    webhooks = WebhooksFirst()
    typing = TypingIndicator(twilio_client(fake_api.account_sid, fake_api.auth_token, fake_api.base_url, 5.0),
                             webhooks_first=webhooks.wait)
    try:
        with webhooks.answering():
            shown = typing.show("SM" + "1" * 32)
            wait_for(lambda: len(webhooks._answered._waiters) == 1)  # the post waits for this webhook
            assert fake_api.typing == []
        assert shown.result(timeout=5)
        assert [t["message_id"] for t in fake_api.typing] == ["SM" + "1" * 32]
    finally:
        typing.pool.shutdown(wait=True)
