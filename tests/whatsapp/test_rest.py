"""WhatsApp in REST mode: an empty answer at once, the replies through a fake Messages API over real HTTP."""
from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Response
from structlog.testing import capture_logs

from tests.conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM, LiveServer
from tests.servers import wait_for
from tests.whatsapp.test_twiml import APOLOGY, new_number
from twilio_bridge import metrics
from twilio_bridge.app import create_app
from twilio_bridge.config import Settings
from twilio_bridge.delivery.queue import SqliteJobQueue
from twilio_bridge.state import SqliteFile, SqliteStore, backend
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI, as_seen
from twilio_bridge.testing.standin import ASK_DIGITS, BLOCKED, FALLBACK, HANDOFF, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser

Serve = Callable[[Settings], LiveServer]


def chat(url: str) -> WhatsAppUser:
    return WhatsAppUser(url, AUTH_TOKEN, number=new_number())


def drained(settings: Settings) -> bool:
    """The durable queue is empty: every message's job has finished, so nothing more goes out for it."""
    return SqliteJobQueue(backend(settings.state_url)[1]).pending() == 0


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [as_seen(m) for m in messages]


def test_the_answer_is_empty_and_immediate_and_the_reply_comes_through_the_api(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    standin.delay = 1.0
    user = chat(rest_url)
    posted = user.send("perdí mi tarjeta")
    assert posted.replies == [] and posted.answer.root is not None and len(posted.answer.root) == 0
    assert fake_api.sent_to(user.address) == []  # answered before Rasa did: the webhook never waits for it
    sent = fake_api.wait_for(1, to=user.address)
    assert [(m["from"], m["body"]) for m in sent] == [(WHATSAPP_FROM, ASK_DIGITS)]
    assert standin.received[0]["metadata"]["message_sid"] == posted.sid


def test_one_users_messages_go_in_order_without_holding_up_another(
        rest_url: str, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    standin.delay = 1.0
    ana, beto = chat(rest_url), chat(rest_url)
    for text in ("perdí mi tarjeta", "1234", "1"):  # each only makes sense after the previous one's answer
        ana.send(text)
    beto.send("quiero un agente")
    assert bodies(fake_api.wait_for(3, to=ana.address)) == [
        ASK_DIGITS, "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?\n[Sí] [No]", BLOCKED]
    assert [r["message"] for r in standin.received if r["sender"] == ana.address] == ["perdí mi tarjeta", "1234",
                                                                                       "/affirm"]
    order = [m["to"] for m in fake_api.messages]
    # not held up by ana's lane: beto's reply went while ana's second message still waited for her first
    assert order.index(beto.address) < order.index(ana.address, order.index(ana.address) + 1)
    assert bodies(fake_api.sent_to(beto.address)) == [f"{HANDOFF}\n\nPara hablar con una persona, llame al {HUMAN}."]


def test_the_same_message_twice_reaches_rasa_once(rest_url: str, standin: RasaStandIn,
                                                  fake_api: FakeTwilioAPI) -> None:
    standin.delay = 0.2
    user = chat(rest_url)
    first = user.send("perdí mi tarjeta")
    user.resend(first)
    fake_api.wait_for(1, to=user.address)
    user.resend(first)
    user.send("quiero un agente")  # behind any duplicate in the user's lane: its reply comes after them
    replies = bodies(fake_api.wait_for(2, to=user.address))
    assert replies == [ASK_DIGITS, f"{HANDOFF}\n\nPara hablar con una persona, llame al {HUMAN}."]
    assert [r["message"] for r in standin.received] == ["perdí mi tarjeta", "quiero un agente"]


def test_delivery_threads_waiting_for_rasa_leave_the_webhooks_a_connection(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More delivery threads than a SQLite file's pool has connections, every one waiting for a slow Rasa:
    none holds a connection while it waits, so a webhook still stores its message instead of falling back
    to answering in TwiML (what it does when the queue cannot take the message)."""
    monkeypatch.setattr(SqliteFile, "POOL_WAIT", 2.0)  # a starved pool fails the webhook's write sooner
    threads = SqliteFile.POOL_SIZE + 4
    standin.delay = 4.0
    url = serve(dataclasses.replace(rest_settings, whatsapp_workers=threads, rasa_timeout=8.0)).url
    users = [chat(url) for _ in range(threads)]
    assert all(user.send("hola").replies == [] for user in users)
    wait_for(lambda: len(standin.received) == threads)  # each thread has a user's message at Rasa
    standin.delay = 0.0
    late = chat(url)
    posted = late.send("perdí mi tarjeta")
    assert posted.replies == [] and SqliteJobQueue(backend(rest_settings.state_url)[1]).seen(posted.sid)
    assert bodies(fake_api.wait_for(1, to=late.address)) == [ASK_DIGITS]
    assert {m["to"] for m in fake_api.wait_for(threads + 1)} == {user.address for user in [*users, late]}


def test_images_go_as_media_messages_after_the_text(rest_url: str, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    user.send("muéstrame la imagen")
    sent = fake_api.wait_for(2, to=user.address)
    assert [(m["body"], m["media_urls"]) for m in sent] == [("Así se ve su tarjeta.", []),
                                                           ("", ["https://example.com/card.png"])]


def test_a_failing_rasa_is_retried_with_backoff_until_it_answers(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_retry_window=10)).url)
    standin.mode = "error500"
    user.send("perdí mi tarjeta")
    wait_for(lambda: len(standin.received) >= 3)  # three tries, and nothing sent for any of them
    assert fake_api.sent_to(user.address) == []
    standin.mode = "ok"
    assert bodies(fake_api.wait_for(1, to=user.address)) == [ASK_DIGITS]
    times = [r["at"] for r in standin.received]
    assert len(times) >= 3 and times[2] - times[1] > times[1] - times[0]  # waits grow


def test_after_the_retry_window_the_user_gets_an_apology_and_the_lane_goes_on(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_retry_window=1.2)).url)
    standin.mode = "drop"
    user.send("perdí mi tarjeta")
    user.send("hola")  # waits behind the first message; its own retry window starts when its turn comes
    assert bodies(fake_api.wait_for(1, to=user.address)) == [APOLOGY]
    standin.mode = "ok"
    assert bodies(fake_api.wait_for(2, to=user.address)) == [APOLOGY, FALLBACK]


@pytest.mark.parametrize("failure", ["429", "500", "drop"])
def test_twilio_overload_errors_and_network_failures_are_retried(
        failure: str, rest_url: str, rest_settings: Settings, fake_api: FakeTwilioAPI) -> None:
    fake_api.fail(failure, times=2)
    user = chat(rest_url)
    user.send("perdí mi tarjeta")
    assert bodies(fake_api.wait_for(1, to=user.address)) == [ASK_DIGITS]
    wait_for(lambda: drained(rest_settings))  # the job is done: nothing more can be sent for it
    assert len(fake_api.sent_to(user.address)) == 1
    assert len([a for a in fake_api.attempts if a["to"] == user.address]) == 3


def test_an_unreachable_messages_api_is_named_with_its_cause_on_the_first_retry(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn) -> None:
    closed = LiveServer(Response("unused"))
    closed.stop()  # nothing listens there now
    user = chat(serve(dataclasses.replace(rest_settings, twilio_api_base_url=closed.url)).url)
    with capture_logs() as logs:
        user.send("hola")
        wait_for(lambda: len([e for e in logs if e["event"] == "whatsapp.retry_later"]) >= 2)
    retries = [e for e in logs if e["event"] == "whatsapp.retry_later"][:2]
    assert [e["log_level"] for e in retries] == ["warning", "info"]
    url = f"{closed.url}/2010-04-01/Accounts/{rest_settings.twilio_account_sid}/Messages.json"
    assert retries[0]["reason"] == "twilio" and retries[0]["detail"] == f"POST {url}: connection refused"


def test_outside_the_24_hour_window_is_not_retried_and_is_logged_with_its_code(
        rest_url: str, fake_api: FakeTwilioAPI, standin: RasaStandIn) -> None:
    fake_api.fail("63016", times=None)
    user = chat(rest_url)
    with capture_logs() as logs:
        user.send("muéstrame la imagen")  # two messages: the second is not even tried
        wait_for(lambda: any(e["event"] == "whatsapp.delivery" for e in logs))
    failed = [e for e in logs if e["event"] == "whatsapp.send.failed"]
    assert [(e["code"], e["status"], e["log_level"]) for e in failed] == [(63016, 400, "error")]
    assert [e["outcome"] for e in logs if e["event"] == "whatsapp.delivery"] == ["window_closed"]  # job done
    assert len(fake_api.attempts) == 1 and fake_api.messages == []
    health = requests.get(rest_url + "/health").json()
    assert health["whatsapp"]["pending"] == 0 and health["whatsapp"]["counts"]["send_errors"] == 1


def test_past_the_rate_limit_one_notice_through_the_api_then_nothing(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    user = chat(serve(dataclasses.replace(rest_settings, whatsapp_rate_limit=2)).url)
    for text in ("hola", "hola otra vez", "¿hay alguien?", "¿hola?"):
        user.send(text)
    sent = fake_api.wait_for(3, to=user.address)
    wait_for(lambda: drained(rest_settings))  # every message's job is done: nothing more can be sent
    assert bodies(sent) == [FALLBACK, FALLBACK, "Recibí muchos mensajes suyos en poco tiempo. Por favor, espere un "
                                                "minuto antes de escribir de nuevo."]
    assert len(fake_api.sent_to(user.address)) == 3 and len(standin.received) == 2


def test_status_callbacks_are_checked_logged_and_counted(rest_url: str, fake_api: FakeTwilioAPI) -> None:
    user = chat(rest_url)
    with capture_logs() as logs:
        assert user.report_status("SM1", "delivered") == 204
        assert user.report_status("SM2", "undelivered", "63016") == 204
        assert user.report_status("SM3", "failed", "30008") == 204
        assert WhatsAppUser(rest_url, "forged").report_status("SM4", "failed", "1") == 403
    warnings = [(e["error_code"], e["log_level"]) for e in logs if e["event"] == "whatsapp.delivery_failed"]
    assert warnings == [("63016", "warning"), ("30008", "warning")]
    counts = requests.get(rest_url + "/health").json()["whatsapp"]["counts"]
    assert counts == {"statuses": {"delivered": 1, "undelivered": 1, "failed": 1}, "sent": 0, "send_errors": 0}


def test_sms_replies_come_from_the_number_written_to(rest_url: str, fake_api: FakeTwilioAPI) -> None:
    user = WhatsAppUser(rest_url, AUTH_TOKEN, number=new_number(), channel="sms", bridge_number="+15005550006")
    user.send("hola")
    assert [(m["from"], m["to"]) for m in fake_api.wait_for(1, to=user.address)] == [("+15005550006", user.number)]


def test_with_the_queue_unreachable_the_webhook_answers_in_twiml(
        rest_settings: Settings, tmp_path, standin: RasaStandIn) -> None:  # type: ignore[no-untyped-def]
    class BrokenQueue(SqliteJobQueue):
        def offer(self, job_id: str, user: str, admit: Callable[[], dict[str, Any] | None]) -> bool | None:
            raise ConnectionError("state store down")

    app = create_app(rest_settings, queue=BrokenQueue(tmp_path / "q.db"))
    server = LiveServer(app)
    try:
        assert [r.body for r in chat(server.url).send("perdí mi tarjeta").replies] == [ASK_DIGITS]
    finally:
        server.stop()


def test_a_redis_state_store_carries_the_queue(serve: Serve, rest_settings: Settings, redis_url: str,
                                               standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    standin.delay = 0.2
    url = serve(dataclasses.replace(rest_settings, state_url=redis_url)).url
    ana, beto = chat(url), chat(url)
    first = ana.send("perdí mi tarjeta")
    ana.resend(first)
    ana.send("1234")
    beto.send("quiero un agente")
    assert bodies(fake_api.wait_for(2, to=ana.address))[1].startswith("La tarjeta que termina en 1 2 3 4.")
    assert fake_api.wait_for(1, to=beto.address)
    assert [r["message"] for r in standin.received if r["sender"] == ana.address] == ["perdí mi tarjeta", "1234"]
    # each job leaves the queue just after its reply reached Twilio
    wait_for(lambda: requests.get(url + "/health").json()["whatsapp"]["pending"] == 0)


def test_whatsapp_settings_are_read_and_bad_ones_named() -> None:
    from twilio_bridge.config import ConfigError, load_settings

    base = {"TWILIO_AUTH_TOKEN": "t"}
    settings = load_settings({**base, "WHATSAPP_RATE_LIMIT": "5", "WHATSAPP_RETRY_WINDOW": "60",
                              "WHATSAPP_WORKERS": "2"})
    assert (settings.whatsapp_rate_limit, settings.whatsapp_retry_window, settings.whatsapp_workers) == (5, 60.0, 2)
    defaults = load_settings(base)
    assert (defaults.whatsapp_rate_limit, defaults.whatsapp_retry_window, defaults.whatsapp_workers) == (20, 300.0, 16)
    with pytest.raises(ConfigError) as error:
        load_settings({**base, "WHATSAPP_RATE_LIMIT": "0", "WHATSAPP_RETRY_WINDOW": "soon", "WHATSAPP_WORKERS": "99"})
    assert [p.split("=")[0] for p in error.value.problems] == ["WHATSAPP_RATE_LIMIT", "WHATSAPP_RETRY_WINDOW",
                                                              "WHATSAPP_WORKERS"]


def test_one_log_line_per_webhook_and_per_delivery_with_the_number_masked(
        rest_url: str, fake_api: FakeTwilioAPI, log_lines: Callable[[], list[dict]]) -> None:
    user = chat(rest_url)
    posted = user.send("perdí mi tarjeta")
    fake_api.wait_for(1, to=user.address)
    wait_for(lambda: any(line["event"] == "whatsapp.delivery" for line in log_lines()))
    lines = log_lines()
    (webhook,) = [line for line in lines if line["event"] == "webhook"]
    (delivery,) = [line for line in lines if line["event"] == "whatsapp.delivery"]
    assert (webhook["outcome"], webhook["message_sid"], webhook["status"]) == ("queued", posted.sid, 200)
    assert (delivery["outcome"], delivery["message_sid"], delivery["sent"]) == ("delivered", posted.sid, 1)
    assert "rasa_ms" in delivery
    assert user.number[1:] not in str(lines) and delivery["user"].endswith(user.number[-4:])


class CountlessStore(SqliteStore):
    """A state store that keeps everything but the delivery counters: their writes fail."""

    def incr(self, key: str, ttl: float) -> int:
        if key.startswith(("whatsapp:sent", "whatsapp:send_error")):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return super().incr(key, ttl)


@pytest.mark.parametrize("failures", [0, 2])
def test_a_counter_that_cannot_be_written_neither_resends_nor_drops_a_message(
        failures: int, rest_settings: Settings, tmp_path, fake_api: FakeTwilioAPI) -> None:  # type: ignore[no-untyped-def]
    fake_api.fail("429", times=failures)
    server = LiveServer(create_app(rest_settings, store=CountlessStore(tmp_path / "countless.db")))
    try:
        assert_delivered_once_after(failures, chat(server.url), fake_api)
    finally:
        server.stop()


@pytest.mark.parametrize("failures", [0, 2])
def test_a_metric_that_cannot_be_written_neither_resends_nor_drops_a_message(
        failures: int, rest_url: str, fake_api: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    def unwritable(result: str) -> None:
        raise OSError("no space left in PROMETHEUS_MULTIPROC_DIR")

    monkeypatch.setattr(metrics, "whatsapp_delivered", unwritable)
    fake_api.fail("429", times=failures)
    assert_delivered_once_after(failures, chat(rest_url), fake_api)


def assert_delivered_once_after(failures: int, user: WhatsAppUser, fake_api: FakeTwilioAPI) -> None:
    """One message, `failures` retries (429), then delivered: the reply sent exactly once."""
    with capture_logs() as logs:
        user.send("perdí mi tarjeta")
        outcomes = lambda: [e["outcome"] for e in logs if e["event"] == "whatsapp.delivery"]  # noqa: E731
        wait_for(lambda: set(outcomes()) - {"send_retry"})  # the job's end, whatever it is
    assert outcomes() == ["send_retry"] * failures + ["delivered"]
    assert bodies(fake_api.sent_to(user.address)) == [ASK_DIGITS]


def test_a_message_answered_in_twiml_when_the_queue_fails_counts_once_towards_the_rate_limit(
        rest_settings: Settings, tmp_path, standin: RasaStandIn) -> None:  # type: ignore[no-untyped-def]
    class FullQueue(SqliteJobQueue):
        def offer(self, job_id: str, user: str, admit: Callable[[], dict[str, Any] | None]) -> bool | None:
            admit()  # counted, as on Redis, where the count is a write of its own before the queue's
            raise sqlite3.OperationalError("database or disk is full")

    settings = dataclasses.replace(rest_settings, whatsapp_rate_limit=2)
    server = LiveServer(create_app(settings, queue=FullQueue(tmp_path / "q.db")))
    try:
        user = chat(server.url)
        assert [[r.body for r in user.send(text).replies] for text in ("hola", "hola otra vez")] == [[FALLBACK]] * 2
    finally:
        server.stop()
