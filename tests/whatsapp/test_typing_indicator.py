"""'typing…' (REST mode): a worker that takes a WhatsApp message posts Twilio's typing indicator for it,
once the webhooks in hand have answered; SMS gets none, and a typing indicator that fails never keeps the
reply from going out."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Callable

import pytest

from twilio_bridge.bridge import EXTENSION
from twilio_bridge.config import Settings
from twilio_bridge.delivery import workers as workers_module
from twilio_bridge.delivery.workers import WebhooksFirst
from twilio_bridge.state import open_store
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen
from twilio_bridge.testing.standin import ASK_DIGITS, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.twilio_rest import twilio_client
from twilio_bridge.whatsapp.conversation import Conversation, Inbound
from twilio_bridge.whatsapp.native import NativeFeatures
from twilio_bridge.whatsapp.replies import Outgoing
from twilio_bridge.whatsapp.typing_indicator import TypingIndicator

from ..conftest import AUTH_TOKEN, LiveServer
from ..metrics_tools import grew, scrape
from ..servers import wait_for
from .test_twiml import new_number


@pytest.fixture
def typing_starts_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in answers at once, where a real Rasa takes a while: each post is let start before the worker
    asks Rasa, or on a busy machine a post not started by the time the reply is ready is (rightly) dropped."""
    show = TypingIndicator.show

    def started(self: TypingIndicator, message_sid: str) -> Future[bool]:
        posting = show(self, message_sid)
        wait_for(lambda: posting.running() or posting.done())
        return posting

    monkeypatch.setattr(TypingIndicator, "show", started)


@pytest.mark.usefixtures("typing_starts_first")
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


@pytest.mark.usefixtures("typing_starts_first")
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


def test_typing_not_yet_posted_when_the_reply_is_ready_is_never_posted(settings: Settings) -> None:
    """Twilio slow on typing: posts wait in the pool. One still waiting when Rasa has answered would show
    "typing…" after the reply, for 25 s, as if more were coming: it is dropped instead."""
    release, posted = threading.Event(), []

    def create(channel: str, message_id: str) -> None:
        posted.append(message_id)
        release.wait(10)

    client = SimpleNamespace(messaging=SimpleNamespace(v2=SimpleNamespace(
        typing_indicator=SimpleNamespace(create=create))))
    typing = TypingIndicator(client, threads=1)  # type: ignore[arg-type]
    try:
        busy = "SM" + "1" * 32
        typing.show(busy)
        wait_for(lambda: posted == [busy])  # the pool's one thread is held by a post Twilio has not answered
        current = SimpleNamespace(settings=settings, store=open_store(settings.state_url),
                                  ask_rasa=lambda *args: [{"text": "Hola, ¿en qué le ayudo?"}])
        user = "whatsapp:" + new_number()
        conversation = Conversation(current, user, NativeFeatures(typing=typing))  # type: ignore[arg-type]
        answered = conversation.reply(Inbound("SM" + "2" * 32, user, "whatsapp:+14155238886", body="hola"))
        assert answered == [Outgoing("Hola, ¿en qué le ayudo?")]
    finally:
        release.set()
        typing.pool.shutdown(wait=True)
    assert posted == [busy]
