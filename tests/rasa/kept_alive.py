"""A server on 127.0.0.1 that keeps connections alive and counts them, for the tests of the Rasa client's pool.

It answers every POST as Rasa's REST channel answers a message, on the connection it came on, and records each
connection it accepted. Given `closes_after`, it plays the moment Sanic times a kept-alive connection out just as
the next request arrives: a request that comes on a connection idle for longer than that is read, then the
connection is closed without an answer. Idle time is read on a clock the test moves, so no test sleeps.
Given `stalls`, it sends an answer's headers and first byte, then nothing more until the test ends. Given
`answers`, each request takes the next of them, bytes written as they are (then the connection closed if said),
until none are left: how a test plays a server that frames, splits or garbles its answers. Given `thinking`, an
Event, every answer waits until it is set, as Rasa's does while its dialogue runs.
"""
from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any, BinaryIO


class FakeClock:
    """Seconds that pass only when a test says so; the client's pool and the server read the same one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_request(stream: BinaryIO) -> bytes | None:
    """One HTTP/1.1 request's body, or None once the client closed the connection."""
    if not stream.readline().strip():
        return None
    length = 0
    while (line := stream.readline().strip()):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return stream.read(length)


class _Connection(socketserver.StreamRequestHandler):
    server: KeptAliveServer
    timeout = 5.0  # a client that never closes cannot hold a test up

    def handle(self) -> None:
        self.server.accepted.append(self.client_address)
        with self.server.lock:
            self.server.open.add(self.connection)
        answered_at: float | None = None
        while (body := read_request(self.rfile)) is not None:
            closes_after = self.server.closes_after
            if answered_at is not None and closes_after is not None and self.server.clock() - answered_at > closes_after:
                self.server.closed_on_arrival += 1
                return  # the request was read; the connection closes with no answer
            if self.server.thinking is not None:
                self.server.thinking.wait(self.timeout)
            if self.server.answers:
                raw, then_close = self.server.answers.pop(0)
                self.wfile.write(raw)
                if then_close:
                    return
                continue
            sender = json.loads(body or b"{}").get("sender", "default")
            answer = json.dumps([{"recipient_id": sender, "text": "ok"}]).encode()
            answered_at = self.server.clock()
            whole = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            if self.server.stalls:
                self.wfile.write(whole[:-len(answer) + 1])
                self.server.ended.wait(self.timeout)
                return
            self.wfile.write(whole)

    def finish(self) -> None:
        with self.server.lock:
            self.server.open.discard(self.connection)
        super().finish()
        self.connection.close()  # now, not when the server thread's frame lets go of it: the client sees its close
        self.server.finished.release()


class KeptAliveServer(socketserver.ThreadingTCPServer):
    """`with KeptAliveServer(clock) as server:` serves on a free port until the block ends, whatever happens."""

    daemon_threads = False  # server_close() waits for every connection's thread

    def __init__(self, clock: FakeClock, closes_after: float | None = None,
                 tls: tuple[Path, Path] | None = None, stalls: bool = False,
                 answers: list[tuple[bytes, bool]] | None = None, thinking: threading.Event | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.clock = clock
        self.closes_after = closes_after
        self.stalls = stalls
        self.answers = list(answers or [])
        self.thinking = thinking
        self.finished = threading.Semaphore(0)  # released as each connection's handler ends and closes it
        self.ended = threading.Event()
        self.accepted: list[tuple[str, int]] = []
        self.closed_on_arrival = 0
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, tls))
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="kept-alive server", daemon=True)

    @property
    def webhook_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/webhooks/rest/webhook"

    def __enter__(self) -> KeptAliveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ended.set()
        self.shutdown()
        with self.lock:
            for connection in self.open:  # ends a kept-alive connection's wait for its next request
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        self._thread.join()
