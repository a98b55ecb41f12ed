"""The Rasa client's answers to each way Rasa can fail."""
from __future__ import annotations

import math
import threading
import time

import pytest

from tests.rasa.kept_alive import FakeClock, KeptAliveServer
from tests.servers import free_port
from twilio_bridge.rasa.client import RasaClient, RasaError
from twilio_bridge.rasa.connections import IDLE_LIMIT
from twilio_bridge.testing.standin import RasaStandIn


@pytest.mark.parametrize("mode, kind", [("error500", "status"), ("html", "invalid"), ("invalid_json", "invalid"),
                                        ("drop", "unreachable"), ("hang", "timeout")])
def test_each_failure_is_one_error_kind(mode: str, kind: str, standin: RasaStandIn) -> None:
    standin.mode = mode
    client = RasaClient(standin.webhook_url, timeout=0.5)
    with pytest.raises(RasaError) as caught:
        client.send(f"sender-{mode}", "hola")
    assert caught.value.kind == kind  # "timeout": the client gave up before the stand-in's 5 s hang ended
    assert len(standin.received) == 1  # a message Rasa may have acted on is never sent twice


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://rasa..internal:{port}"], ids=["refused", "no-such-host"])
def test_an_unreachable_rasa_fails_fast(origin: str) -> None:
    client = RasaClient(origin.format(port=free_port()) + "/webhooks/rest/webhook", timeout=5)
    with pytest.raises(RasaError) as caught:
        client.send("sender-down", "hola")
    assert caught.value.kind == "unreachable" and caught.value.resendable


def test_a_good_answer_and_an_empty_one(standin: RasaStandIn) -> None:
    client = RasaClient(standin.webhook_url, timeout=2)
    assert client.send("s2", "/session_start", {"channel": "voice"})[0]["recipient_id"] == "s2"
    assert standin.received[0]["metadata"] == {"channel": "voice"}
    standin.mode = "empty"
    assert client.send("s2", "hola") == []


def test_messages_share_one_kept_connection_and_a_closed_pool_opens_another(standin: RasaStandIn) -> None:
    client = RasaClient(standin.webhook_url, timeout=2)
    assert client.send("s3", "hola") and client.send("s3", "hola")
    assert client.pool.opened == 1
    client.pool.close()  # as at a worker's end
    assert client.send("s3", "hola")[0]["recipient_id"] == "s3"
    assert client.pool.opened == 2 and len(standin.received) == 3


def test_an_answer_is_read_in_another_thread_than_the_one_that_sent_the_message(standin: RasaStandIn) -> None:
    standin.delay = 0.3
    client = RasaClient(standin.webhook_url, timeout=2)
    reply = client.post("CA-held", "/session_start", {"channel": "voice"})
    assert not reply.arrives(within=0.01)  # the stand-in is still thinking
    read: list[list[dict]] = []
    reader = threading.Thread(target=lambda: read.append(reply.items()))
    reader.start()
    reader.join(5)
    assert read and read[0][0]["recipient_id"] == "CA-held"
    assert client.send("CA-held", "hola")  # the connection went back to the pool in good order
    assert client.pool.opened == 1  # and was used again


def test_an_answer_that_begins_but_never_ends_is_a_timeout_within_the_readers_limit() -> None:
    with KeptAliveServer(FakeClock(), stalls=True) as server:
        client = RasaClient(server.webhook_url, timeout=5)
        reply = client.post("CA1", "hola")
        assert reply.arrives(within=5)
        started = time.monotonic()
        with pytest.raises(RasaError) as caught:
            reply.items(within=0.2)
        assert caught.value.kind == "timeout" and time.monotonic() - started < 2
        client.pool.close()


def test_turns_share_one_connection_while_it_is_idle_less_than_the_limit() -> None:
    clock = FakeClock()
    with KeptAliveServer(clock) as server:
        client = RasaClient(server.webhook_url, timeout=2, clock=clock)
        client.send("CA1", "hola")
        client.send("CA1", "quiero bloquear mi tarjeta")
        clock.advance(IDLE_LIMIT - 0.5)
        client.send("CA1", "uno dos tres cuatro")
        client.pool.close()
    assert len(server.accepted) == 1


def test_a_connection_idle_for_the_limit_is_replaced_by_a_new_one() -> None:
    clock = FakeClock()
    with KeptAliveServer(clock) as server:
        client = RasaClient(server.webhook_url, timeout=2, clock=clock)
        client.send("CA1", "hola")
        clock.advance(IDLE_LIMIT)
        assert client.send("CA1", "uno dos tres cuatro")[0]["text"] == "ok"
        client.send("CA1", "gracias")  # and the new one is kept
        client.pool.close()
    assert len(server.accepted) == 2


SANIC_21_KEEP_ALIVE = 5.0  # Rasa Open Source 3.6.0 to 3.6.14 close an idle connection after 5 s


@pytest.mark.parametrize("idle_limit, answered", [(IDLE_LIMIT, True), (math.inf, False)], ids=["limited", "unlimited"])
def test_a_turn_never_goes_out_on_a_connection_rasa_is_timing_out(idle_limit: float, answered: bool) -> None:
    """The server closes a connection idle for more than 5 s only when the next request arrives on it, as Sanic
    does when its keep-alive timeout fires while the request is on its way (the client sees no FIN before sending).
    With no limit the client reuses that connection and loses the turn: what the limit exists to prevent."""
    clock = FakeClock()
    with KeptAliveServer(clock, closes_after=SANIC_21_KEEP_ALIVE) as server:
        client = RasaClient(server.webhook_url, timeout=2, idle_limit=idle_limit, clock=clock)
        client.send("CA1", "hola")
        clock.advance(SANIC_21_KEEP_ALIVE + 0.5)
        if answered:
            assert client.send("CA1", "uno dos tres cuatro")[0]["text"] == "ok"
        else:
            with pytest.raises(RasaError) as caught:
                client.send("CA1", "uno dos tres cuatro")
            assert caught.value.kind == "unreachable"
        client.pool.close()
    assert server.closed_on_arrival == (0 if answered else 1)
    assert len(server.accepted) == (2 if answered else 1)


def test_a_connection_is_idle_from_when_its_answer_came_not_from_when_it_was_read() -> None:
    """A delivery thread sees the answer arrive, then waits for a working slot before reading it: Rasa counts
    the connection idle from its answer, and so must the pool, or the next message meets Rasa's close."""
    clock = FakeClock()
    with KeptAliveServer(clock, closes_after=SANIC_21_KEEP_ALIVE) as server:
        client = RasaClient(server.webhook_url, timeout=30, clock=clock)
        reply = client.post("CA1", "hola")
        assert reply.arrives(within=5)
        clock.advance(1.5)  # waiting for a working slot
        assert reply.items()[0]["text"] == "ok"
        clock.advance(IDLE_LIMIT - 0.1)  # under the limit since the read, 5.4 s since the answer
        assert client.send("CA1", "uno dos tres cuatro")[0]["text"] == "ok"
        client.pool.close()
    assert server.closed_on_arrival == 0 and len(server.accepted) == 2
