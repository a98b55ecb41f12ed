"""A webhook Twilio retries reaches Rasa once, whenever the retry comes, and keeping its answer never costs one."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from twilio_bridge import routes
from twilio_bridge.app import create_app
from twilio_bridge.state import SqliteStore
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.web.hooks import IDEMPOTENCY_HEADER, first_answer, keep_answer

APOLOGY = "Lo siento, tengo un problema técnico."


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

    def put_many(self, entries: Sequence[tuple[str, dict, float]]) -> None:  # put too: it is put_many of one
        if any(key.startswith("replay:") for key, _, _ in entries):
            raise RuntimeError("disk full")
        super().put_many(entries)


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


def test_a_turn_stores_the_calls_state_and_keeps_its_answer_in_one_write(settings, tmp_path, commits) -> None:
    store = SqliteStore(tmp_path / "state.db")
    server = LiveServer(create_app(settings, store=store))
    try:
        call = TwilioPhone(server.url, AUTH_TOKEN).call()
        commits.clear()
        call.say("perdí mi tarjeta")
        assert call.state == "gathering"
        assert len(commits) == 2  # the claim of the webhook's token; then the call's state with the answer kept
        with store.file.connection() as db:
            kept = db.execute("SELECT value FROM kv WHERE key LIKE ?", (f"replay:{routes.SPEECH}:%",)).fetchall()
        assert [json.loads(value)["answer"]["body"] for value, in kept] == [call.answers[-1].body]
        assert store.get(f"call:{call.sid}")["turn"] == 1
    finally:
        server.stop()


class StatelessStore(SqliteStore):
    """A store that keeps answers for retries, but cannot store a call's state."""

    def put_many(self, entries: Sequence[tuple[str, dict, float]]) -> None:
        if any(key.startswith("call:") for key, _, _ in entries):
            raise RuntimeError("disk full")
        super().put_many(entries)


def test_a_call_whose_state_cannot_be_stored_gets_an_apology_and_a_person(settings, tmp_path) -> None:
    server = LiveServer(create_app(settings, store=StatelessStore(tmp_path / "stateless.db")))
    try:
        call = TwilioPhone(server.url, AUTH_TOKEN).call()
        assert call.state == "dialing" and call.dialed == HUMAN and call.heard[0] == APOLOGY
    finally:
        server.stop()


class StaleForBoth(SqliteStore):
    """Two retries that both read the first request's stale claim before either acts on it: whatever one does
    next, the other has seen what it saw."""

    def __init__(self, path: object):
        super().__init__(path)
        self.both_read = threading.Barrier(2, timeout=5)
        self._first_reads = 2
        self._counting = threading.Lock()

    def get(self, key: str) -> dict | None:
        record = super().get(key)
        with self._counting:
            first, self._first_reads = self._first_reads > 0, self._first_reads - 1
        if first:
            self.both_read.wait()
        return record


def test_two_retries_that_take_over_from_a_dead_first_request_answer_once(tmp_path) -> None:
    """WhatsApp in TwiML mode: the first request's worker died, and two retries of the message come at once.
    One of them answers (Rasa hears the message once); the other gets that answer."""
    store = StaleForBoth(tmp_path / "state.db")
    key = "whatsapp:seen:SM-retried-twice"
    store.put(key, {"claimed_at": time.time() - 20}, 60)  # its worker died
    answers: list[object] = []

    def retry() -> None:
        earlier = first_answer(store, key, 60, take_over=True)
        if earlier is None:  # this one answers
            time.sleep(0.2)
            keep_answer(store, key, "<Response><Message>hola</Message></Response>", 60)
        answers.append(earlier)

    retries = [threading.Thread(target=retry) for _ in range(2)]
    for thread in retries:
        thread.start()
    for thread in retries:
        thread.join(20)
    assert len(answers) == 2 and answers.count(None) == 1  # one answered; the other replayed its answer
    assert "<Response><Message>hola</Message></Response>" in answers
