"""Scale-out as operators run it: two bridge hosts (gunicorn in network namespaces of their own, so each has its
own address) behind one nginx upstream (the shipped site), sharing one Redis.

nginx balances round robin, so consecutive webhooks of one call or one WhatsApp user alternate between the
hosts; each host's log says which webhooks it answered. Load comes from threads here, each caller from an
address of its own in 127.0.0.0/8, as Twilio's webhooks come from many (the site limits requests per address).
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
import redis
import requests

from tests.conftest import HUMAN
from tests.hosts import Cluster, cluster
from tests.servers import wait_for
from twilio_bridge import routes
from twilio_bridge.phrases import phrases_for
from twilio_bridge.testing.fake_twilio_api import as_seen
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone
from twilio_bridge.testing.standin import ASK_DIGITS, BLOCKED, ECHO, GREETING

PHRASES = phrases_for("es-MX")
HANDED_OFF = [PHRASES.trouble, PHRASES.transfer]
APOLOGY = f"{PHRASES.chat_trouble} {PHRASES.chat_handoff.format(number=HUMAN)}"
CONFIRM = "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"
QUEUE = "twilio-bridge:queue:"  # the durable queue's keys in Redis (delivery/queue.py)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A turn whose host dies while it holds is polled until RASA_MAX_WAIT_SECONDS and the deadline's grace (2 s) have
    # passed, a poll every VOICE_HOLD_SECONDS: 6 s at 1 s a poll stays within the phone's 10 redirects in a row,
    # where 0.5 s made 11 or 12 as the kill fell (TwilioWouldFail, once the polls got quicker).
    settings = {"VOICE_HOLD_SECONDS": "1", "RASA_TIMEOUT": "3", "RASA_MAX_WAIT_SECONDS": "4",
                "WHATSAPP_RETRY_WINDOW": "60", "WHATSAPP_RATE_LIMIT": "1000"}
    with cluster(tmp_path_factory.mktemp("scale-out"), 2, settings) as running:
        yield running


@pytest.fixture
def two(hosts: Cluster) -> Cluster:
    """Both hosts up and taking webhooks, the stand-in back to its dialogue at full speed."""
    hosts.standin.mode, hosts.standin.delay = "ok", 0.0
    for bridge in hosts.bridges:
        if bridge.gunicorn.process is None:
            bridge.gunicorn.start()
    probe = hosts.phone()

    def both_take_calls() -> bool:  # nginx leaves a host that failed out for a while (fail_timeout)
        probe.call(), probe.call()
        last_two = hosts.host_of(route=routes.VOICE)[-2:]
        return last_two[0][1] != last_two[1][1]

    wait_for(both_take_calls, seconds=30)
    return hosts


def test_a_call_alternates_between_hosts_and_a_hold_on_one_is_answered_on_the_other(two: Cluster) -> None:
    call = two.phone().call()
    assert call.heard == [GREETING]
    assert call.say("perdí mi tarjeta") == [ASK_DIGITS]
    two.standin.delay = 1.5  # past VOICE_HOLD_SECONDS: the caller holds, and polls
    heard = call.press("1234")
    assert heard[0] == PHRASES.hold and CONFIRM in heard
    two.standin.delay = 0.0
    assert call.press("1") == BLOCKED.split("\n\n")  # the menu was saved by whichever host answered the poll

    served = two.host_of(call_sid=call.sid)
    assert [line["route"] for _, _, line in served] == [
        routes.VOICE, routes.SPEECH, routes.SPEECH, *[routes.POLL] * (len(served) - 4), routes.SPEECH]
    hosts_in_turn = [host for _, host, _ in served]
    assert all(a != b for a, b in zip(hosts_in_turn, hosts_in_turn[1:])), f"not alternating: {served}"
    assert served[2][2]["outcome"] == "hold" and served[-2][2]["outcome"] == "gather"
    assert served[2][1] != served[3][1]  # held on one host, polled on the other


def test_a_whatsapp_users_messages_alternate_between_hosts_and_the_replies_go_in_order_once(two: Cluster) -> None:
    two.standin.delay = 0.2  # the three messages are queued before the first is answered
    user = two.whatsapp_user(new_number())
    sids = [user.send(text).sid for text in ("perdí mi tarjeta", "1234", "1")]
    sent = two.fake_api.wait_for(3, to=user.address, timeout=20)
    wait_for(lambda: queue_is_empty(two), seconds=20)
    assert [as_seen(m) for m in two.fake_api.sent_to(user.address)] == [ASK_DIGITS, CONFIRM + "\n[Sí] [No]", BLOCKED]
    assert sent == two.fake_api.sent_to(user.address)
    assert [r["message"] for r in two.standin.received if r["sender"] == user.address] == [
        "perdí mi tarjeta", "1234", "/affirm"]
    hosts_in_turn = [two.host_of(message_sid=sid)[0][1] for sid in sids]
    assert hosts_in_turn in ([0, 1, 0], [1, 0, 1])


@dataclass
class Load:
    """Callers and WhatsApp users in threads until stopped; everything they heard or were sent, and every failure."""
    hosts: Cluster
    calls: list[tuple[float, float, PhoneCall]] = field(default_factory=list)  # started, ended, call
    failures: list[str] = field(default_factory=list)
    users: dict[str, list[str]] = field(default_factory=dict)  # address: the texts it wrote, in order
    apologised: list[str] = field(default_factory=list)  # texts answered with an apology in the webhook
    # requests whose answer stopped after its headers (see _caller): when each began, and when it was cut
    cut_off: list[tuple[float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, callers: int, writers: int) -> Load:
        for n in range(callers):
            self._thread(self._caller, f"127.0.1.{n + 1}")
        for n in range(writers):
            self._thread(self._writer, f"127.0.2.{n + 1}")
        return self

    def _thread(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _guarded(self, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except Exception as exc:  # TwilioWouldFail above all: a caller would have heard an application error
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def _caller(self, source: str) -> None:
        phone = self.hosts.phone(source)
        began = [0.0]  # when the call's latest request began
        while not self.stop.is_set():
            try:
                self._call(phone, began)
            except requests.exceptions.ChunkedEncodingError:
                # The host died between writing its answer's headers and its body: nginx had passed the
                # headers on and cannot send the request elsewhere. Only a kill can do this (test below).
                self.cut_off.append((began[0], time.monotonic()))

    def _call(self, phone: TwilioPhone, began: list[float]) -> None:
        started = began[0] = time.monotonic()
        call = phone.call()
        assert after_holding(call.heard) in ([GREETING], HANDED_OFF), call.heard
        for _ in range(3):
            if call.state != "gathering":
                break
            text = f"pregunta {word()}"
            began[0] = time.monotonic()
            heard = call.say(text)
            assert after_holding(heard) in ([ECHO + text], HANDED_OFF), heard
        assert call.state in ("gathering", "dialing"), call.state
        assert call.state == "gathering" or call.dialed == HUMAN
        self.calls.append((started, time.monotonic(), call))

    def _writer(self, source: str) -> None:
        user = self.hosts.whatsapp_user(new_number(), source)
        self.users[user.address] = []
        while not self.stop.is_set():
            text = f"mensaje {word()}"
            began = time.monotonic()
            try:
                posted = user.send(text)
            except requests.exceptions.ChunkedEncodingError:  # see _caller; the answer came after the enqueue
                self.cut_off.append((began, time.monotonic()))
                self.users[user.address].append(text)
                continue
            if posted.replies:
                assert [r.body for r in posted.replies] == [APOLOGY], posted.replies
                self.apologised.append(text)
            else:
                self.users[user.address].append(text)
            self.stop.wait(0.4)  # a person writes a few messages in a row, not a flood

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self.threads)

    def turns(self) -> int:
        return sum(len(call.answers) for _, _, call in self.calls)


def test_a_host_killed_under_load_loses_no_call_and_no_message(two: Cluster) -> None:
    two.standin.mode, two.standin.delay = "echo", 0.3
    load = Load(two).start(callers=6, writers=4)
    try:
        wait_for(lambda: load.turns() >= 20 and len(two.host_of(route=routes.WHATSAPP)) >= 8, seconds=30)
        # Rasa slows down, so the victim dies with a delivery in hand: its lease must run out and pass on. The
        # victim is a host that has one: a user's lane stays with the host that holds it while the user writes
        # faster than Rasa answers, and all of them may be on one host.
        two.standin.delay = 2.0
        asked = len(two.standin.received)  # each request from here on waits 2 s: the kill comes in the middle
        wait_for(lambda: any(in_hand(two, bridge.host.address, asked) for bridge in two.bridges), seconds=30)
        victim = next(bridge for bridge in two.bridges if in_hand(two, bridge.host.address, asked))
        survivor = next(bridge for bridge in two.bridges if bridge is not victim)
        killed_at = time.monotonic()
        victim.gunicorn.kill()  # SIGKILL, master and workers: leases, held turns and connections die with it
        dead_at, dead_clock = time.monotonic(), time.time()
        in_hand_when_killed = in_hand(two, victim.host.address, asked)
        two.standin.delay = 0.1
        wait_for(lambda: sum(start > killed_at for start, _, _ in load.calls) >= 6, seconds=30)
    finally:
        load.finish()
    assert load.failures == []
    # Only the kill cuts an answer off: a request begun before the host was dead, cut after it was killed.
    assert all(began < dead_at and killed_at <= cut for began, cut in load.cut_off)
    in_flight = [call for started, ended, call in load.calls if started < killed_at < ended]
    assert in_flight, "no call was in the middle of its turns when the host died"
    assert any(line.get("call_sid") == call.sid for call in in_flight for line in survivor.served())
    # Every message the webhook took is answered once, in order, whoever held it when the host died
    # (a lease runs out after LEASE_SECONDS and the survivor takes the lane over).
    for address, texts in load.users.items():
        two.fake_api.wait_for(len(texts), to=address, timeout=40)
    wait_for(lambda: queue_is_empty(two), seconds=40)
    victim_asked = {ECHO + r["message"] for r in two.standin.received if r["peer"] == victim.host.address}
    for address, texts in load.users.items():
        sent = two.fake_api.sent_to(address)
        # Twilio's "created" came back just as the host died, before it could record it: that one message
        # goes twice (delivery/courier.py), once from the victim before it was dead and once from the
        # survivor that took its lane over. No other may.
        again = [n for n in range(1, len(sent)) if sent[n]["body"] == sent[n - 1]["body"]]
        assert [m["body"] for n, m in enumerate(sent) if n not in again] == [ECHO + text for text in texts]
        assert len(again) <= 1
        assert all(sent[n]["body"] in victim_asked and sent[n - 1]["at"] <= dead_clock <= sent[n]["at"]
                   for n in again)
    assert in_hand_when_killed and in_hand_when_killed <= in_hand(two, survivor.host.address, asked)


def in_hand(hosts: Cluster, address: str, since: int) -> set[str]:
    """The WhatsApp messages that the host at `address` has asked Rasa about since the stand-in's `since`th request."""
    return {r["metadata"]["message_sid"] for r in hosts.standin.received[since:]
            if r["peer"] == address and r["sender"].startswith("whatsapp:")}


def test_redis_restarted_under_load_every_webhook_is_answered_and_the_bridge_recovers(two: Cluster) -> None:
    two.standin.mode, two.standin.delay = "echo", 0.05
    load = Load(two).start(callers=4, writers=3)
    try:
        wait_for(lambda: load.turns() >= 20, seconds=30)
        stopped = now()
        two.stop_redis()
        wait_for(lambda: len(handed_off(two, stopped)) >= 6 and load.apologised, seconds=30)
        two.start_redis()
        restarted = time.monotonic()
        wait_for(lambda: sum(1 for start, _, call in load.calls if start > restarted and call.dialed is None) >= 6,
                 seconds=30)
    finally:
        load.finish()
    assert load.failures == [] and load.cut_off == []
    assert {host for host, _ in handed_off(two, stopped)} == {0, 1}  # each host answered without its store
    # Every message the webhook took is answered, in order. One being sent at the moment Redis went away
    # may go twice: the record that it went out could not be written.
    for address, texts in load.users.items():
        two.fake_api.wait_for(len(texts), to=address, timeout=40)
    wait_for(lambda: queue_is_empty(two), seconds=40)
    for address, texts in load.users.items():
        bodies = [m["body"] for m in two.fake_api.sent_to(address)]
        assert [b for n, b in enumerate(bodies) if n == 0 or b != bodies[n - 1]] == [ECHO + t for t in texts]


def after_holding(heard: list[str]) -> list[str]:
    """What the caller heard once any holding phrases were over (a loaded machine makes some turns slow)."""
    holding = (PHRASES.hold, PHRASES.still_holding)
    return heard[next((n for n, text in enumerate(heard) if text not in holding), len(heard)):]


def handed_off(hosts: Cluster, since: str) -> list[tuple[int, str]]:
    """(host, route) of every webhook answered with an apology and a person since `since`."""
    return [(host, line["route"]) for stamp, host, line in hosts.host_of()
            if stamp > since and line.get("outcome") == "handoff"]


def now() -> str:
    """This moment as the logs write it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def word() -> str:
    """A random word of letters only (speech cleaning leaves it as it is)."""
    return "".join(secrets.choice("abcdefghijklmnoprstu") for _ in range(8))


def queue_is_empty(hosts: Cluster) -> bool:
    client = redis.Redis.from_url(hosts.redis_url)
    try:
        return client.hlen(QUEUE + "jobs") == 0
    finally:
        client.close()


def new_number() -> str:
    return "+52155" + str(secrets.randbelow(10**8)).zfill(8)
