"""A slow assistant never costs a call: the caller is held, and hears the answer when it comes.

Most tests scale the waits down (hold after 0.3 s, give up after a few seconds); one runs the
real defaults (hold after 4 s, give up after 30 s) against assistants answering in 6, 12 and 40 s.
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

import pytest

from tests.clocks import SkewedClock
from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from tests.servers import wait_for
from twilio_bridge.app import create_app
from twilio_bridge.config import Settings
from twilio_bridge.state import RedisStore, SqliteStore
from twilio_bridge.voice import holding as holding_module
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone
from twilio_bridge.testing.standin import ASK_DIGITS, FALLBACK, GREETING, RasaStandIn
from twilio_bridge.voice.holding import DEADLINE_GRACE, RasaWaiter

HOLD = "Un momento, por favor."
STILL_HOLDING = "Sigo con su consulta, gracias por esperar."
APOLOGY = "Lo siento, tengo un problema técnico."
TRANSFER = "Le comunico con una persona, un momento por favor."
PUBLIC = "https://ivr.example.com"  # both hosts sit behind one public origin, as behind a load balancer
QUICK = {"voice_hold_seconds": 0.3, "rasa_timeout": 1.5, "rasa_max_wait_seconds": 3.0}


class TwoHostPhone(TwilioPhone):
    """Sends polls to a second bridge: the held turn's answer must travel through the shared store."""

    def __init__(self, first: str, second: str, auth_token: str):
        super().__init__(first, auth_token, public_base_url=PUBLIC)
        self.first, self.second = first, second
        self.sent: list[tuple[str, str]] = []

    def post(self, public_url: str, params: dict[str, str], headers: dict[str, str] | None = None) -> requests.Response:
        self.base_url = self.second if urlsplit(public_url).path == "/webhook/twilio/poll" else self.first
        self.sent.append((self.base_url, urlsplit(public_url).path))
        return super().post(public_url, params, headers)


def urls(call: PhoneCall) -> list[str]:
    return [urlsplit(answer.url).path for answer in call.answers]


def test_a_slow_turn_is_held_then_answered_and_the_call_goes_on(reconfigure, standin: RasaStandIn) -> None:
    call = reconfigure(**QUICK).call()
    standin.delay = 1.0
    call.say("perdí mi tarjeta")
    assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS
    assert call.gather["numDigits"] == "4"  # the assistant's directive survives the hold
    assert "/webhook/twilio/poll" in urls(call)
    standin.delay = 0.0
    call.press("1234")
    assert call.heard[0] == "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"


def test_a_slow_call_start_is_held_then_greets(reconfigure, standin: RasaStandIn) -> None:
    standin.delay = 1.0
    call = reconfigure(**QUICK).call()
    assert call.heard[0] == HOLD and call.heard[-1] == GREETING and call.state == "gathering"


def test_a_long_wait_reminds_the_caller_now_and_then(reconfigure, standin: RasaStandIn) -> None:
    call = reconfigure(**{**QUICK, "rasa_max_wait_seconds": 5.0}).call()
    standin.delay = 2.0
    call.say("hola")
    assert call.heard[0] == HOLD and call.heard[-1] == FALLBACK
    assert STILL_HOLDING in call.heard


def test_rasa_slower_than_the_longest_wait_gets_an_apology_and_a_person(reconfigure, standin: RasaStandIn) -> None:
    call = reconfigure(**{**QUICK, "rasa_max_wait_seconds": 1.5}).call()
    standin.delay = 6.0
    call.say("perdí mi tarjeta")  # waiting out Rasa's 6 s would have brought ASK_DIGITS, not the apology
    assert call.heard[0] == HOLD and call.heard[-2:] == [APOLOGY, TRANSFER]
    assert call.state == "dialing" and call.dialed == HUMAN


def test_rasa_failing_during_a_hold_hands_the_caller_to_a_person(reconfigure, standin: RasaStandIn) -> None:
    call = reconfigure(**QUICK).call()
    standin.delay, standin.mode = 1.0, "error500"
    call.say("perdí mi tarjeta")
    assert call.heard[0] == HOLD and call.heard[-2:] == [APOLOGY, TRANSFER] and call.dialed == HUMAN


def test_without_time_to_hold_a_slow_rasa_is_a_hand_off(reconfigure, standin: RasaStandIn) -> None:
    call = reconfigure(voice_hold_seconds=4.0, rasa_timeout=1.5, rasa_max_wait_seconds=1.0).call()
    standin.delay = 3.0
    call.say("hola")
    assert call.heard == [APOLOGY, TRANSFER] and "/webhook/twilio/poll" not in urls(call)


def test_a_poll_for_a_turn_nobody_holds_apologises(reconfigure) -> None:
    phone = reconfigure(**QUICK)
    call = phone.call()
    call.heard = []
    call._fetch(phone.public("/webhook/twilio/poll?turn=7&hold=1"), call.params())
    assert call.heard == [APOLOGY, TRANSFER]


def test_an_unsigned_poll_is_refused(reconfigure) -> None:
    phone = reconfigure(**QUICK)
    call = phone.call()
    response = requests.post(phone.base_url + "/webhook/twilio/poll?turn=0", data=call.params(), timeout=5)
    assert response.status_code == 403


def test_the_answer_reaches_a_poll_on_another_host(serve: Callable[[Settings], LiveServer], settings: Settings,
                                                   standin: RasaStandIn) -> None:
    shared = dataclasses.replace(settings, public_base_url=PUBLIC, **QUICK)
    held_here, polled_there = serve(shared), serve(shared)  # one state file; two apps, each with its own pool
    phone = TwoHostPhone(held_here.url, polled_there.url, AUTH_TOKEN)
    call = phone.call()
    standin.delay = 1.0
    call.say("perdí mi tarjeta")
    assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS
    speech = phone.sent.index((held_here.url, "/webhook/twilio/speech"))
    polls = phone.sent[speech + 1:]
    assert polls and set(polls) == {(polled_there.url, "/webhook/twilio/poll")}


def test_real_defaults_with_assistants_answering_in_6_12_and_40_seconds(tmp_path: Path) -> None:
    """Hold after 4 s, give up after 30 s: the defaults, with real delays (three calls at once, about 32 s)."""
    results: dict[float, PhoneCall] = {}
    errors: list[BaseException] = []

    def place(delay: float) -> None:
        try:
            with RasaStandIn().start() as rasa:
                settings = Settings(rasa_webhook_url=rasa.webhook_url, twilio_auth_token=AUTH_TOKEN,
                                    fallback_phone_number=HUMAN, state_url=f"sqlite:///{tmp_path / 'state.db'}")
                server = LiveServer(create_app(settings))
                try:
                    call = TwilioPhone(server.url, AUTH_TOKEN).call()
                    rasa.delay = delay
                    call.say("perdí mi tarjeta")
                    results[delay] = call
                finally:
                    server.stop()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=place, args=(delay,)) for delay in (6.0, 12.0, 40.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    for delay in (6.0, 12.0):
        assert results[delay].heard[0] == HOLD and results[delay].heard[-1] == ASK_DIGITS
        assert results[delay].state == "gathering"
    slowest = results[40.0]
    assert slowest.heard[0] == HOLD and slowest.heard[-2:] == [APOLOGY, TRANSFER] and slowest.dialed == HUMAN


def test_with_every_rasa_slot_taken_a_new_turn_is_handed_off_at_once_and_never_reaches_rasa(
        reconfigure, standin: RasaStandIn) -> None:
    phone = reconfigure(**{**QUICK, "rasa_max_in_flight": 2})
    first, second, third = phone.call(), phone.call(), phone.call()
    standin.delay = 1.0
    held = [threading.Thread(target=call.say, args=("perdí mi tarjeta",)) for call in (first, second)]
    for thread in held:
        thread.start()
    asking = {first.sid, second.sid}
    wait_for(lambda: sum(r["sender"] in asking and r["message"] == "perdí mi tarjeta" for r in standin.received) == 2)
    third.say("perdí mi tarjeta")
    for thread in held:
        thread.join()
    assert third.heard == [APOLOGY, TRANSFER] and third.dialed == HUMAN  # no hold: no queue behind the others
    assert [r["message"] for r in standin.received if r["sender"] == third.sid] == ["/session_start"]
    assert first.heard[-1] == second.heard[-1] == ASK_DIGITS


class ScriptedReply:
    """A message sent to a Rasa whose answer comes when the test says so."""

    def __init__(self, message: str, answered: threading.Event):
        self.message, self.answered = message, answered

    def arrives(self, within: float) -> bool:
        return self.answered.wait(within)

    def items(self, within: float | None = None) -> list[dict]:
        assert self.answered.wait(10)
        return [{"text": f"sobre {self.message}"}]

    def abandon(self) -> None:
        pass


class ScriptedRasa:
    """The waiter's two steps, noting what was sent and in which thread each answer was read."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.sent: list[tuple[str, float]] = []
        self.read_in: list[threading.Thread] = []

    def post(self, sender: str, message: str, metadata: dict, timeout: float) -> ScriptedReply:
        self.sent.append((message, timeout))
        return ScriptedReply(message, self.answered)

    def read(self, reply: ScriptedReply, within: float | None = None) -> list[dict]:
        self.read_in.append(threading.current_thread())
        return reply.items(within)


def test_a_quick_answer_is_read_by_the_turn_itself_and_a_slow_one_by_the_pool(tmp_path: Path) -> None:
    rasa, store = ScriptedRasa(), SqliteStore(tmp_path / "state.db")
    waiter = RasaWaiter(rasa.post, rasa.read, store, max_in_flight=2)
    try:
        assert waiter.ask("pending:A:1", "A", "uno", {}, wait=0.05, max_wait=5.0, extra={}) is None  # held
        assert store.get("pending:A:1")["status"] == "waiting"
        rasa.answered.set()
        wait_for(lambda: store.get("pending:A:1")["status"] == "done")
        assert store.get("pending:A:1")["items"] == [{"text": "sobre uno"}]
        quick = waiter.ask("pending:B:1", "B", "dos", {}, wait=0.05, max_wait=5.0, extra={})
        assert quick is not None and quick.items == [{"text": "sobre dos"}]
    finally:
        waiter.pool.shutdown(wait=True)
    held_by, read_by = rasa.read_in
    assert held_by is not threading.current_thread() and read_by is threading.current_thread()
    assert store.get("pending:B:1") is None  # an answer in time is never stored for a poll


def test_an_ask_that_finds_no_free_slot_is_refused_not_queued_behind_its_deadline(tmp_path: Path) -> None:
    rasa = ScriptedRasa()
    waiter = RasaWaiter(rasa.post, rasa.read, SqliteStore(tmp_path / "state.db"), max_in_flight=1)
    try:
        assert waiter.ask("pending:A:1", "A", "uno", {}, wait=0.05, max_wait=0.5, extra={}) is None  # held
        refused = waiter.ask("pending:B:1", "B", "dos", {}, wait=5.0, max_wait=0.5, extra={})
        assert refused is not None and refused.error == "overloaded"
    finally:
        rasa.answered.set()
        waiter.pool.shutdown(wait=True)
    assert [message for message, _ in rasa.sent] == ["uno"]  # "dos" never went to Rasa, not even after its deadline
    assert all(timeout <= 0.5 for _, timeout in rasa.sent)


@pytest.mark.parametrize("skew", [60.0, -60.0])
def test_on_redis_a_held_turns_deadline_is_told_by_the_stores_clock_not_a_hosts(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    """A host a minute ahead must not give up a turn another host still waits for (the caller would be handed off
    with the answer on its way); one a minute behind must give up a turn whose worker is gone when its time is up,
    not a minute late."""
    store = RedisStore(redis_url, prefix=f"test-{secrets.token_hex(4)}:")
    rasa = ScriptedRasa()  # answers only when told: from outside, the worker that asked waits as a dead one would
    asking, polling = (RasaWaiter(rasa.post, rasa.read, store, max_in_flight=1) for _ in range(2))
    try:
        assert asking.ask("pending:A:1", "A", "uno", {}, wait=0.05, max_wait=1.0, extra={}) is None  # held
        held_at = time.monotonic()
        monkeypatch.setattr(holding_module, "time", SkewedClock(skew))  # from here on, the other host's clock
        assert not polling.past_deadline("pending:A:1")
        record = polling.collect("pending:A:1", longest=0.3)
        assert record is not None and record["status"] == "waiting"  # still waiting for the answer, not given up
        wait_for(lambda: polling.past_deadline("pending:A:1"), seconds=10)
        assert 1.0 + DEADLINE_GRACE - 0.1 <= time.monotonic() - held_at < 1.0 + DEADLINE_GRACE + 1.5
    finally:
        rasa.answered.set()
        asking.pool.shutdown(wait=True)
        polling.pool.shutdown(wait=True)
