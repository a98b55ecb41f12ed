"""The Rasa client's HTTP: every way a server may frame an answer is read whole, a connection is kept only while
it is in step with its server, and over TLS as in the clear."""
from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.ops_tools import self_signed
from tests.rasa.kept_alive import FakeClock, KeptAliveServer
from twilio_bridge.rasa import connections
from twilio_bridge.rasa.client import RasaClient, RasaError
from twilio_bridge.rasa.connections import IDLE_LIMIT, Origin, Pool, request

REPLY = json.dumps([{"recipient_id": "CA1", "text": "¿En qué le ayudo?"}]).encode()


def framed(body: bytes = REPLY, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status.encode(), extra, len(body), body)


def chunked(*chunks: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n")


def served(answers: list[tuple[bytes, bool]], messages: int = 2) -> tuple[list[object], int]:
    """What `messages` messages from one client got (items, or the RasaError's kind), and how many connections
    they took, from a server that answers with `answers` first and as Rasa does after them."""
    got: list[object] = []
    with KeptAliveServer(FakeClock(), answers=answers) as server:
        client = RasaClient(server.webhook_url, timeout=2)
        for number in range(messages):
            try:
                got.append(client.send(f"CA{number + 1}", "hola"))
            except RasaError as exc:
                got.append(exc.kind)
        client.pool.close()
    return got, len(server.accepted)


def ok(sender: str) -> list[dict[str, str]]:
    return [{"recipient_id": sender, "text": "ok"}]


def test_an_answer_framed_by_its_length_keeps_the_connection() -> None:
    assert served([(framed(), False)]) == ([json.loads(REPLY), ok("CA2")], 1)


def test_an_answer_in_chunks_is_read_whole_and_keeps_the_connection() -> None:
    half = len(REPLY) // 2
    assert served([(chunked(REPLY[:half], REPLY[half:]), False)]) == ([json.loads(REPLY), ok("CA2")], 1)


@pytest.mark.parametrize("coding", [b"", b"Transfer-Encoding: identity\r\n"], ids=["no-length", "not-chunked"])
def test_an_answer_that_ends_with_the_connection_is_read_whole_and_the_next_message_opens_another(coding: bytes) -> None:
    unframed = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%s\r\n%s" % (coding, REPLY)
    assert served([(unframed, True)]) == ([json.loads(REPLY), ok("CA2")], 2)


@pytest.mark.parametrize("closing", [framed(extra=b"Connection: close\r\n"),
                                     framed().replace(b"HTTP/1.1", b"HTTP/1.0")], ids=["close", "http/1.0"])
def test_a_server_that_says_it_closes_gets_the_next_message_on_a_new_connection(closing: bytes) -> None:
    assert served([(closing, False)]) == ([json.loads(REPLY), ok("CA2")], 2)


def test_an_interim_answer_is_passed_over_for_the_final_one() -> None:
    assert served([(b"HTTP/1.1 100 Continue\r\n\r\n" + framed(), False)]) == ([json.loads(REPLY), ok("CA2")], 1)


def test_a_close_after_an_interim_answer_is_a_broken_connection_and_the_message_not_sent_again() -> None:
    with KeptAliveServer(FakeClock(), answers=[(b"HTTP/1.1 100 Continue\r\n\r\n", True)]) as server:
        client = RasaClient(server.webhook_url, timeout=2)
        with pytest.raises(RasaError) as caught:
            client.send("CA1", "hola")
    assert caught.value.kind == "unreachable" and not caught.value.resendable  # the server had it


def test_a_second_answer_to_one_message_never_becomes_the_answer_to_the_next() -> None:
    """A server out of step: had the connection been kept, the second message would read the stray answer."""
    stray = framed(json.dumps([{"recipient_id": "CA1", "text": "stray"}]).encode())
    assert served([(framed() + stray, False)]) == ([json.loads(REPLY), ok("CA2")], 2)


@pytest.mark.parametrize("answer, then_close, kind", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", False, "invalid"),  # not HTTP at all
    (framed()[:-10], True, "unreachable"),  # closed with its body cut short
    (b"HTTP/1.1 200 OK\r\nContent-Len", True, "unreachable"),  # closed within the headers
    (b"", True, "unreachable"),  # closed with no answer
    (framed(status="503 Service Unavailable"), False, "status"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", True, "invalid"),
], ids=["not-http", "cut-body", "cut-headers", "no-answer", "503", "upgrade"])
def test_a_broken_answer_is_one_error_and_the_next_message_is_answered(answer: bytes, then_close: bool, kind: str) -> None:
    got, _ = served([(answer, then_close)])
    assert got == [kind, ok("CA2")]


def test_an_answer_longer_than_any_reply_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "LONGEST_ANSWER", 64)
    assert served([(chunked(b"[" + b" " * 40, b" " * 40 + b"]"), False)]) == (["invalid", ok("CA2")], 2)


def test_a_connection_the_server_closed_while_idle_is_replaced_before_the_next_message() -> None:
    with KeptAliveServer(FakeClock(), answers=[(framed(), True)]) as server:
        client = RasaClient(server.webhook_url, timeout=2)
        assert client.send("CA1", "hola") == json.loads(REPLY)
        assert server.finished.acquire(timeout=5)  # the server has closed the connection the client keeps
        assert client.send("CA1", "uno dos tres cuatro") == ok("CA1")
        client.pool.close()
    assert len(server.accepted) == 2 and server.closed_on_arrival == 0


def test_over_tls_an_idle_connection_is_reopened_and_a_busy_one_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path, "rasa.test", ip="127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as an operator trusts a private CA: the client reads the system's
    clock = FakeClock()
    with KeptAliveServer(clock, closes_after=IDLE_LIMIT + 1, tls=(cert, key)) as server:
        client = RasaClient(server.webhook_url, timeout=2, clock=clock)
        answers = [client.send("CA1", "hola"), client.send("CA1", "hola")]
        clock.advance(IDLE_LIMIT + 1.5)
        answers.append(client.send("CA1", "hola"))
        client.pool.close()
    assert answers == [ok("CA1")] * 3
    assert len(server.accepted) == 2  # the first two messages on one connection, the third on a new one
    assert server.closed_on_arrival == 0


def test_a_tls_server_not_trusted_is_unreachable_and_nothing_was_sent(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "rasa.test", ip="127.0.0.1")
    with KeptAliveServer(FakeClock(), tls=(cert, key)) as server:
        client = RasaClient(server.webhook_url, timeout=2)
        with pytest.raises(RasaError) as caught:
            client.send("CA1", "hola")
    assert caught.value.kind == "unreachable" and caught.value.resendable
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail


def test_over_tls_an_answer_still_to_come_is_not_taken_for_the_servers_session_tickets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS 1.3 sends tickets once the handshake is done: the socket is readable, with nothing from Rasa yet. Taken
    for an answer, a voice turn would wait for it instead of holding the caller."""
    cert, key = self_signed(tmp_path, "rasa.test", ip="127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    thinking = threading.Event()
    with KeptAliveServer(FakeClock(), tls=(cert, key), thinking=thinking) as server:
        pool = Pool(Origin(server.webhook_url), size=1)
        conn = pool.connection(2.0)
        conn.send(request(pool.origin.head("POST", "/webhooks/rest/webhook", "application/json"), b'{"sender": "CA1"}'), 2.0)
        assert select.select([conn.sock], [], [], 5)[0]  # the tickets have come: the socket is readable
        assert not conn.readable(0)  # and yet Rasa, still thinking, has said nothing
        thinking.set()
        assert conn.readable(5)
        answer = conn.receive(time.monotonic() + 5)
        assert json.loads(answer.body) == ok("CA1") and answer.reusable
        pool.put(conn)
        assert pool.connection(2.0) is conn  # kept: the tickets read are not taken for the server's close
        pool.close()
        conn.close()
        client = RasaClient(server.webhook_url, timeout=5)
        assert client.send("CA1", "hola") == ok("CA1") and client.send("CA1", "hola") == ok("CA1")
        assert client.pool.opened == 1
        client.pool.close()


def test_a_host_written_with_its_final_dot_is_checked_and_named_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rasa.example.` skips the resolver's search domains; the certificate and the virtual host name `rasa.example`."""
    cert, key = self_signed(tmp_path, "rasa.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *args: connect(("127.0.0.1" if address[0] == "rasa.test." else address[0],
                                                        address[1]), *args))
    with KeptAliveServer(FakeClock(), tls=(cert, key)) as server:
        client = RasaClient(server.webhook_url.replace("127.0.0.1", "rasa.test."), timeout=2)
        assert client.send("CA1", "hola") == ok("CA1")
        client.pool.close()
    assert Origin(server.webhook_url.replace("127.0.0.1", "rasa.test.")).host_header == f"rasa.test:{server.server_address[1]}"


def test_health_checks_over_tls_use_the_webhooks_origin_and_load_the_cas_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/health asks Rasa on every operator's request: loading the system's CAs each time would be file I/O per check."""
    cert, key = self_signed(tmp_path, "rasa.test", ip="127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    contexts: list[ssl.SSLContext] = []
    make = ssl.create_default_context
    monkeypatch.setattr(connections.ssl, "create_default_context", lambda: contexts.append(make()) or contexts[-1])
    with KeptAliveServer(FakeClock(), tls=(cert, key)) as server:
        client = RasaClient(server.webhook_url, timeout=2)
        origin = server.webhook_url.split("/webhooks")[0]
        assert [json.loads(client.version(origin))[0]["text"] for _ in range(3)] == ["ok"] * 3
        assert client.send("CA1", "hola") == ok("CA1")
        client.pool.close()
    assert len(contexts) == 1 and len(server.accepted) == 4  # each check on a connection of its own, closed after
