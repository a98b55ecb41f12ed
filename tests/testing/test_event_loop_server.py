"""How the Rasa stand-in is served (event_loop_server), over real HTTP on 127.0.0.1: connections
kept alive as Rasa keeps them, hundreds of slow answers held on one thread, and a stop that does not wait for them."""
from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.servers import ROOT, wait_for
from twilio_bridge.rasa.client import RasaClient
from twilio_bridge.testing.standin import ASK_DIGITS, GREETING, RasaStandIn


@pytest.fixture
def standin() -> Iterator[RasaStandIn]:
    with RasaStandIn() as running:
        yield running


def post(connection: http.client.HTTPConnection, sender: str, message: str) -> http.client.HTTPResponse:
    connection.request("POST", "/webhooks/rest/webhook", json.dumps({"sender": sender, "message": message}),
                       {"Content-Type": "application/json"})
    return connection.getresponse()


def test_two_requests_are_answered_on_one_connection(standin: RasaStandIn) -> None:
    connection = http.client.HTTPConnection(urlsplit(standin.origin).netloc, timeout=5)
    try:
        first = post(connection, "CA1", "/session_start")
        assert json.loads(first.read())[0]["text"] == GREETING
        assert first.getheader("Connection", "").lower() != "close"
        socket_used = connection.sock
        assert socket_used is not None  # http.client drops a socket the server said it would close
        second = post(connection, "CA1", "perdí mi tarjeta")
        assert second.status == 200 and json.loads(second.read())[0]["recipient_id"] == "CA1"
        assert connection.sock is socket_used
    finally:
        connection.close()


def test_the_bridges_rasa_client_keeps_one_connection_for_many_messages(standin: RasaStandIn) -> None:
    client = RasaClient(standin.webhook_url, timeout=5)
    for message in ("/session_start", "perdí mi tarjeta", "1234", "sí"):
        assert client.send("CA1", message)
    assert client.pool.opened == 1  # none dropped by the stand-in and replaced
    assert client.version(standin.origin) == "Hello from Rasa: 3.21.0"


def test_drop_mode_closes_a_kept_alive_connection_without_an_answer(standin: RasaStandIn) -> None:
    connection = http.client.HTTPConnection(urlsplit(standin.origin).netloc, timeout=5)
    try:
        post(connection, "CA1", "/session_start").read()
        standin.mode = "drop"
        with pytest.raises(http.client.RemoteDisconnected):
            post(connection, "CA1", "hola")
    finally:
        connection.close()


def test_stop_ends_delayed_answers_at_once_and_sends_them() -> None:
    standin = RasaStandIn(delay=300.0).start()
    answers: list[Any] = []
    try:
        connections = [http.client.HTTPConnection(urlsplit(standin.origin).netloc, timeout=30) for _ in range(2)]
        # the second message from the same sender waits behind the first, as Rasa keeps one sender's order
        callers = [threading.Thread(target=lambda c=c, m=m: answers.append(json.loads(post(c, "CA1", m).read())))
                   for c, m in zip(connections, ["/session_start", "perdí mi tarjeta"])]
        for caller in callers:
            caller.start()
        wait_for(lambda: len(standin.received) == 2)
        standin.stop()
        for caller in callers:
            caller.join(timeout=30)  # a delay left to run its 300 s would leave no answer here
        assert sorted(answer[0]["text"] for answer in answers) == sorted([GREETING, ASK_DIGITS])
    finally:
        standin.stop()


async def ask_at_once(standin: RasaStandIn, senders: int) -> tuple[list[Any], int]:
    """`senders` messages at once, from this thread; the answers, and how many threads ran while all were held.
    Answered one after another, they would take `senders` × the delay: far longer than the time allowed."""
    async with asyncio.timeout(60), aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def ask(n: int) -> Any:
            body = {"sender": f"CA{n}", "message": "/session_start"}
            async with session.post(standin.webhook_url, json=body) as answer:
                assert answer.status == 200
                return await answer.json()

        asking = asyncio.gather(*(ask(n) for n in range(senders)))
        while len(standin.received) < senders and not asking.done():  # all in, none answered (each waits out the delay)
            await asyncio.sleep(0.02)
        threads_while_held = threading.active_count()
        return await asking, threads_while_held


def test_hundreds_of_delayed_answers_come_back_without_a_thread_each() -> None:
    with RasaStandIn(delay=0.5) as standin:
        threads_before = threading.active_count()
        answers, threads_while_held = asyncio.run(ask_at_once(standin, 300))
    assert [answer[0]["recipient_id"] for answer in answers] == [f"CA{n}" for n in range(300)]
    assert {answer[0]["text"] for answer in answers} == {GREETING}
    assert threads_while_held <= threads_before + 2  # a thread per connection would add 300


def test_a_port_in_use_is_said_in_one_line(standin: RasaStandIn) -> None:
    port = urlsplit(standin.origin).port
    done = subprocess.run([sys.executable, "-m", "twilio_bridge.testing.standin", "--port", str(port)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr == f"Port {port} is in use by another program: stop it, or choose another port.\n"


def test_the_bridges_processes_do_not_load_the_stand_ins_server() -> None:
    """aiohttp would cost each gunicorn worker 8 MB; the demo imports the stand-in only when it runs."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, twilio_voice_server; print(sorted(sys.modules))"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "'twilio_bridge.cli.demo'" in loaded and "'aiohttp'" not in loaded
