"""A webhook Twilio retries reaches Rasa once, whenever the retry comes, and keeping its answer never costs one."""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.state import SqliteStore
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.web.hooks import IDEMPOTENCY_HEADER


def test_concurrent_retries_of_one_webhook_reach_rasa_once(phone: TwilioPhone, standin: RasaStandIn) -> None:
    call = phone.call()
    standin.delay = 0.5  # the first is still waiting for Rasa when the retry arrives
    params = call.params(SpeechResult="perdí mi tarjeta", Confidence="0.9")
    token = {IDEMPOTENCY_HEADER: "one-webhook-retried"}
    start = threading.Barrier(3)
    answers: list[tuple[int, str]] = []

    def post() -> None:
        start.wait()
        response = phone.post(phone.public(routes.SPEECH), params, headers=token)
        answers.append((response.status_code, response.text))

    senders = [threading.Thread(target=post) for _ in range(3)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(20)
    assert len(answers) == 3 and len(set(answers)) == 1 and answers[0][0] == 200
    assert ET.fromstring(answers[0][1]).find("Gather") is not None
    assert [r["message"] for r in standin.received].count("perdí mi tarjeta") == 1


class ForgetfulStore(SqliteStore):
    """A store that cannot keep answers for retries (full disk, Redis restarting), and works otherwise."""

    def put(self, key: str, value: dict, ttl: float) -> None:
        if key.startswith("replay:"):
            raise RuntimeError("disk full")
        super().put(key, value, ttl)


class UnclaimableStore(ForgetfulStore):
    """Nor can it claim a retry's token."""

    def add(self, key: str, value: dict, ttl: float) -> bool:
        if key.startswith("replay:"):
            raise RuntimeError("disk full")
        return super().add(key, value, ttl)


@pytest.mark.parametrize("store", [ForgetfulStore, UnclaimableStore])
def test_a_store_that_cannot_keep_the_answer_never_changes_it(store: type[SqliteStore], settings, tmp_path) -> None:
    server = LiveServer(create_app(settings, store=store(tmp_path / "forgetful.db")))
    try:
        call = TwilioPhone(server.url, AUTH_TOKEN).call()  # TwilioWouldFail on Flask's HTML 500
        assert call.state == "gathering"
        call.say("perdí mi tarjeta")
        assert call.state == "gathering" and call.answers[-1].content_type.startswith("text/xml")
    finally:
        server.stop()


def test_a_retry_whose_first_request_never_answered_gets_the_error_answer(settings, tmp_path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    server = LiveServer(create_app(settings, store=store))
    try:
        phone = TwilioPhone(server.url, AUTH_TOKEN)
        call = phone.call()
        store.add(f"replay:{routes.SPEECH}:lost-first", {"claimed_at": time.time() - 20}, 60)  # its worker died
        response = phone.post(phone.public(routes.SPEECH), call.params(SpeechResult="hola"),
                              headers={IDEMPOTENCY_HEADER: "lost-first"})
        assert response.status_code == 200
        assert ET.fromstring(response.text).findtext("Dial").strip() == HUMAN
    finally:
        server.stop()
