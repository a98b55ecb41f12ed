"""HTTP/1.1 to one origin, as the Rasa client uses it: kept-alive connections, each request written in one
send, each answer parsed by llhttp (httptools), and never a request on a connection the server may be closing.

A server closes a kept-alive connection once it has been idle for its keep-alive timeout. A connection whose
FIN has arrived is seen before reuse and replaced, but a FIN still on its way when the request leaves is
missed: the request meets a closing socket and the Rasa client may not send it again, since Rasa may have
read it. So a connection idle for IDLE_LIMIT is closed instead of reused, and a new one opened: no request
ever goes out at the moment the server times the connection out.

Why not urllib3 and http.client: against the same Rasa a message took 203 µs through them and 136 µs here,
where they build the request in several writes and parse the answer's headers through the `email` package
(bench/README.md, "Issue 16, eighth session"). The parsing that must be right, framing by length, chunks or close, is
llhttp's, the parser of Node.js, which Sanic (Rasa's server) and uvicorn use.
"""
from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from .. import __version__

# Rasa serves on Sanic, which closes a connection idle for KEEP_ALIVE_TIMEOUT: 5 s by default up to Sanic 23.3,
# 120 s from 23.6 (sanic-org/sanic#2670). Rasa Open Source 3.6 ships Sanic 21.12: 3.6.0 to 3.6.14 keep its 5 s;
# 3.6.15 and later, and Rasa Pro 3.21 (Sanic 25.12), set 120 s themselves (rasa/core/constants.py). 4 s stays
# below either, with a second for a loaded machine, so one setting serves every Rasa (a proxy in front of it must
# keep idle connections longer than that). Reopening costs a turn under 0.5 ms on loopback (bench/keepalive_race.py).
IDLE_LIMIT = 4.0
LONGEST_ANSWER = 8 * 1024 * 1024  # Rasa's replies are a few kB; more is a broken server, not an answer to wait for
RECEIVE_SIZE = 65536

Clock = Callable[[], float]


class CannotConnect(OSError):
    """The connection never opened (refused, unresolved, timed out, TLS refused): the server has no request."""


class BrokenAnswer(Exception):
    """What came back is not an HTTP answer: the server (or something in front of it) is broken."""


class Answer(NamedTuple):
    status: int
    body: bytes
    reusable: bool  # read whole, in step, from a server that keeps the connection


class _Trailing(Exception):
    """A second message began after the answer: parsing stops there."""


class Origin:
    """Where requests go (scheme, host, port), and how a request's head names it."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname  # as written, trailing dot and all, to be resolved
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None  # the system's CAs, SSL_CERT_FILE
        self.server_name = self.host.rstrip(".")  # what the certificate names and a virtual host answers to
        name = self.server_name if self.server_name.isascii() else self.server_name.encode("idna").decode()
        name = f"[{name}]" if ":" in name else name  # an IPv6 address
        self.host_header = name + (f":{parts.port}" if parts.port else "")

    def head(self, method: str, target: str, content_type: str | None = None) -> bytes:
        """A request's head but for its length and the blank line that ends it (`request` adds them): written once
        for the webhook, so that a message's request is one formatting of bytes."""
        head = (f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"User-Agent: twilio-bridge/{__version__}\r\nAccept-Encoding: identity\r\n")
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        return head.encode("ascii")


def target(url: str) -> str:
    """The request target of `url`: its path and query."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def request(head: bytes, body: bytes | None = None) -> bytes:
    """The whole request, `head` from Origin.head, to be written in one send."""
    if body is None:
        return head + b"\r\n"
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


class _Parsing:
    """httptools' callbacks for one answer: its status and body, whether it ended, and how it was framed. What
    comes after the answer is no answer to this request: the connection is out of step and is not used again."""

    __slots__ = ("parser", "status", "parts", "size", "framed", "headers_done", "complete", "keep_alive", "trailing")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.parts: list[bytes] = []
        self.size = 0
        self.framed = False  # a length or chunks say where the body ends; otherwise the server's close does
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read as the answer completes (llhttp forgets it once ready for the next one)
        self.trailing = False

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Trailing
        self.parts, self.size, self.framed, self.headers_done = [], 0, False, False  # after a 1xx: only the final counts

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > LONGEST_ANSWER:
            raise BrokenAnswer(f"an answer longer than {LONGEST_ANSWER // (1024 * 1024)} MiB")
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # interim: a close now ends no answer
            self.headers_done = False
        else:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:  # something came after the answer (_Trailing, or what is not HTTP at all)
                self.trailing = True
            elif isinstance(exc, httptools.HttpParserUpgrade):  # a 101: what follows is not HTTP
                raise BrokenAnswer("it switched protocols") from None
            elif isinstance(exc.__context__, BrokenAnswer):  # raised in a callback, which llhttp reports as its own
                raise exc.__context__ from None
            else:
                raise BrokenAnswer(f"not HTTP: {exc}") from None

    def ends_at_close(self) -> bool:
        """Whether the server's close ends this answer: its headers came and nothing else says where it ends."""
        return self.headers_done and not self.framed

    def answer(self) -> Answer:
        return Answer(self.status, b"".join(self.parts), reusable=self.keep_alive and not self.trailing)


class Connection:
    """One socket to the origin, one request at a time. It may be handed between threads, never shared."""

    def __init__(self, sock: socket.socket, clock: Clock):
        self.sock = sock
        self.clock = clock
        self.idle_since = 0.0
        # When the answer was first seen: the server counts the connection idle from then, though the answer
        # may be read later (a delivery thread waits for a working slot first).
        self.answered_at: float | None = None
        self._early: bytes | None = None  # what `readable` read over TLS, for `receive`; b"" is the server's close

    def send(self, request: bytes, timeout: float) -> None:
        self.answered_at = None
        self.sock.settimeout(timeout)
        self.sock.sendall(request)

    def readable(self, within: float) -> bool:
        """Whether something (an answer, or the server's close) comes within `within` seconds."""
        if self._early is None and not self._anything(within):
            return False
        if self.answered_at is None:
            self.answered_at = self.clock()
        return True

    def _anything(self, within: float) -> bool:
        if not isinstance(self.sock, ssl.SSLSocket):
            return _polled(self.sock, within)
        # Over TLS the socket is readable for TLS's own records too (TLS 1.3 sends its session tickets after the
        # handshake): only what the server says, or its close, counts. It is read here and kept for `receive`.
        until = time.monotonic() + within
        while not self.sock.pending():
            if not _polled(self.sock, until - time.monotonic()):
                return False
            self.sock.settimeout(0.0)
            try:
                self._early = self.sock.recv(RECEIVE_SIZE)
            except ssl.SSLWantReadError:  # a record of TLS's own
                continue
            except OSError:
                pass  # broken: `receive` says how
            break
        return True

    def receive(self, deadline: float) -> Answer:
        """The answer, whole, before `clock()` reaches `deadline`. Raises TimeoutError; OSError if the connection
        broke or closed before the answer ended; BrokenAnswer. A connection that raised is not to be used again."""
        parsing = _Parsing()
        while not parsing.complete:
            if self._early is not None:
                data, self._early = self._early, None
            else:
                left = deadline - self.clock()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.sock.settimeout(left)
                data = self.sock.recv(RECEIVE_SIZE)
            if self.answered_at is None:
                self.answered_at = self.clock()
            if not data:
                if parsing.ends_at_close():
                    return parsing.answer()  # not reusable: it closed
                raise ConnectionResetError("the server closed the connection before its answer ended")
            parsing.feed(data)
        return parsing.answer()

    def close(self) -> None:
        self.sock.close()


class Pool:
    """Kept-alive connections to one origin, the most recently used first. A connection goes back (`put`) only
    when its answer said it may; one idle for `idle_limit`, or closed by the server while idle, is closed rather
    than reused. More than `size` may be open at once; only `size` are kept."""

    def __init__(self, origin: Origin, size: int, idle_limit: float = IDLE_LIMIT, clock: Clock = time.monotonic):
        self.origin = origin
        self.size = size
        self.idle_limit = idle_limit
        self.clock = clock
        self.opened = 0  # connections opened so far, which the tests count
        self._idle: list[Connection] = []  # list.pop and .append are atomic: threads share it without a lock
        self._counting = threading.Lock()

    def connection(self, connect_timeout: float) -> Connection:
        """A kept connection fit for a request, or a new one. Raises CannotConnect."""
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if self.clock() - conn.idle_since < self.idle_limit and not conn.readable(0):
                return conn
            conn.close()  # idle too long, or the server closed it (or sent what no request asked for)
        return self._open(connect_timeout)

    def put(self, conn: Connection) -> None:
        """`conn`, its answer read whole and `reusable`, kept for the next request (or closed if enough are)."""
        if len(self._idle) < self.size:
            conn.idle_since = self.clock() if conn.answered_at is None else conn.answered_at
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break

    def _open(self, timeout: float) -> Connection:
        origin = self.origin
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host no resolver takes ("rasa..internal")
            raise CannotConnect(_reason(exc, f"no connection within {timeout:g}s")) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request goes in one send: nothing to gather
            if origin.tls is not None:
                sock = origin.tls.wrap_socket(sock, server_hostname=origin.server_name)  # handshake within `timeout`
        except OSError as exc:
            sock.close()
            raise CannotConnect(_reason(exc, f"no TLS handshake within {timeout:g}s")) from exc
        with self._counting:
            self.opened += 1
        return Connection(sock, self.clock)


def _polled(sock: socket.socket, within: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0.0, within) * 1000))


def _reason(exc: Exception, timed_out: str) -> str:
    if isinstance(exc, TimeoutError):
        return timed_out
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
