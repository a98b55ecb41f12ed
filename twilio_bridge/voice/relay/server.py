"""Where relay-mode WebSockets live: one asyncio event loop per worker process, beside the WSGI server.

A call holds its WebSocket for minutes, so a thread per call would cap a host at its thread count
(bench/README.md, "Relay mode: serving the WebSocket", has the measurements). The upgrade request is
an ordinary request in the WSGI server's thread: the signature is checked there (403 before any
upgrade), `websockets` validates the handshake and writes the 101, and the connection then leaves
the WSGI server for this process's event loop, which carries every relay session of the process.
The server's own copy of the connection is swapped for a dead end, so whatever it does with it
afterwards (write a response, close it gracefully) cannot touch the call. Works under gunicorn's
gthread and sync workers and werkzeug's development server; not with TLS terminated in gunicorn
(nginx terminates TLS in the shipped deployment).
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import structlog
from flask import Flask, Request, Response
from websockets.asyncio.connection import Connection
from websockets.datastructures import Headers
from websockets.http11 import Request as HandshakeRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from ...bridge import EXTENSION, Bridge
from ...logs import log
from ...rasa.client import RasaError
from .session import RelaySession

RELAY_EXTENSION = "twilio_bridge.relay"
MAX_FRAME = 64 * 1024  # Twilio's messages are small JSON objects; a transcript is a few hundred bytes
STORE_THREADS = 4  # the state store answers in milliseconds; Rasa's slots stay free for Rasa
SERVER_SOCKETS = ("gunicorn.socket", "werkzeug.socket")
_creating = threading.Lock()


class RelayLoop:
    """This worker's relay sessions on one event loop thread; Rasa and the state store each on a bounded pool.

    Rasa's pool never queues, as in gather mode (voice.holding): with RASA_MAX_IN_FLIGHT asks already
    open, a new one fails at once (RasaError "overloaded") and its caller hears the apology and is handed
    off, rather than waiting silently behind the others.
    """

    def __init__(self, current: Bridge):
        self.current = current
        max_in_flight = current.settings.rasa_max_in_flight
        self.rasa_pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="relay-rasa")
        self.rasa_free = threading.BoundedSemaphore(max_in_flight)  # a slot per pool thread: an ask never queues
        self.pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="relay-store")
        self.loop = asyncio.new_event_loop()
        self.sessions: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay-loop", daemon=True)
        self.thread.start()

    def accept(self, request: Request) -> Response:
        """Answer a WebSocket upgrade (already signature-checked) and hand the connection to the loop."""
        handshake_protocol = ServerProtocol(max_size=MAX_FRAME)
        handshake = handshake_protocol.accept(HandshakeRequest(request.full_path.rstrip("?"), Headers(request.headers.items())))
        if handshake.status_code != 101:
            return Response(handshake.body, status=handshake.status_code, mimetype="text/plain")
        raw = next((request.environ[name] for name in SERVER_SOCKETS if name in request.environ), None)
        if not isinstance(raw, socket.socket) or isinstance(raw, ssl.SSLSocket):
            log.error("relay.unsupported_server", detail="the WSGI server gives no plain socket to take over")
            return Response("Relay mode needs gunicorn (or the development server) behind a TLS proxy\n",
                            status=501, mimetype="text/plain")
        handshake_protocol.send_response(handshake)
        connection = _take_over(raw)
        try:
            connection.sendall(b"".join(handshake_protocol.data_to_send()))
            connection.setblocking(False)
        except OSError:
            connection.close()
            raise
        # No extensions were negotiated; the session's protocol starts where the handshake ended, at frames.
        protocol = ServerProtocol(state=State.OPEN, max_size=MAX_FRAME)
        asyncio.run_coroutine_threadsafe(self._serve(connection, protocol), self.loop)
        return Response(status=101)

    async def run_blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (the state store) on its own pool, with the session's log context."""
        work = functools.partial(contextvars.copy_context().run, function, *args)
        return await self.loop.run_in_executor(self.pool, work)

    async def ask_rasa(self, *args: Any) -> Any:
        """`Bridge.ask_rasa` in one of RASA_MAX_IN_FLIGHT slots, with the session's log context; with every
        slot taken it raises RasaError("overloaded") at once, never a silent queue."""
        if not self.rasa_free.acquire(blocking=False):
            log.warning("rasa.overloaded", detail="every Rasa request slot of this worker is taken")
            raise RasaError("overloaded", "RASA_MAX_IN_FLIGHT requests already open")
        work = functools.partial(contextvars.copy_context().run, self.current.ask_rasa, *args)
        try:
            asked = self.rasa_pool.submit(self._in_slot, work)
        except BaseException:
            self.rasa_free.release()
            raise
        return await asyncio.wrap_future(asked, loop=self.loop)

    def _in_slot(self, work: Callable[[], Any]) -> Any:
        """The slot is freed when Rasa answers or fails, not when the session stops waiting for it."""
        try:
            return work()
        finally:
            self.rasa_free.release()

    async def _serve(self, connection: socket.socket, protocol: ServerProtocol) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        structlog.contextvars.clear_contextvars()  # the task started in the upgrade request's context
        try:
            websocket = Connection(protocol, ping_interval=None, close_timeout=5, max_queue=64)
            await self.loop.connect_accepted_socket(lambda: websocket, connection)
            await RelaySession(self.current, websocket, self).run()
        except Exception:
            log.exception("relay.serve_failed")
        finally:
            self.sessions.discard(task)

    def stop(self, timeout: float) -> None:
        """The worker is stopping: calls in progress get `timeout` seconds to end, then a person takes them over."""
        try:
            asyncio.run_coroutine_threadsafe(self._drain(timeout), self.loop).result(timeout + 15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.rasa_pool.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, timeout: float) -> None:
        if not self.sessions:
            return
        log.info("relay.draining", sessions=len(self.sessions), seconds=timeout)
        _, pending = await asyncio.wait(set(self.sessions), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)


def relay_loop(app: Flask) -> RelayLoop:
    """This process's relay loop, started on the first call (in the worker, after gunicorn's fork)."""
    with _creating:
        if RELAY_EXTENSION not in app.extensions:
            app.extensions[RELAY_EXTENSION] = RelayLoop(app.extensions[EXTENSION])
        return app.extensions[RELAY_EXTENSION]


def stop_relay_loop(app: Flask, timeout: float) -> None:
    with _creating:
        loop = app.extensions.pop(RELAY_EXTENSION, None)
    if loop is not None:
        loop.stop(timeout)


def _take_over(server_socket: socket.socket) -> socket.socket:
    """The connection for the relay loop; the server keeps a socket object whose file descriptor now
    leads nowhere (its peer is closed), so its response and graceful close end there harmlessly."""
    ours = server_socket.dup()
    dead_end, gone = socket.socketpair()
    gone.close()
    os.dup2(dead_end.fileno(), server_socket.fileno())
    dead_end.close()
    return ours
