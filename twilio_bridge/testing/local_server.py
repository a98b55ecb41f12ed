"""The stand-ins' shared plumbing: a server on 127.0.0.1, on a background thread for tests, benchmarks and the chat
simulator, or in the foreground for a command line, until SIGINT or SIGTERM.

Two kinds: `LocalServer` serves a WSGI app on werkzeug's threads (the fake Messages API); `LocalEventLoopServer`
serves an aiohttp handler on one event loop (the Rasa stand-in), which keeps connections alive as Rasa (Sanic)
does and holds hundreds of slow answers without a thread each. aiohttp comes with twilio: no dependency of its own.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

Served = TypeVar("Served", bound="LocalServer")
ServedOnLoop = TypeVar("ServedOnLoop", bound="LocalEventLoopServer")
BACKLOG = 1024  # hundreds of callers connect at once in the benchmarks


class LocalServer:
    """A subclass answers in `_wsgi`; `.start()`, or `with`, serves it on host:port (port 0: a free one)."""

    _server: ThreadedWSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self: Served, host: str = "127.0.0.1", port: int = 0) -> Served:
        self._server = _Server(host, port, self._wsgi, handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self: Served) -> Served:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, f"start() the {type(self).__name__} first"
        return f"http://{self._server.host}:{self._server.port}"

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        raise NotImplementedError


class LocalEventLoopServer:
    """A subclass answers in `_handle`, a coroutine; `.start()`, or `with`, serves it on host:port (port 0: a free
    one) from an event loop on a background thread, `.run()` in the foreground. A slow answer waits in `_pause`,
    which `stop()` ends at once; what is answering then is answered before the connections close."""

    keepalive_seconds = 120.0  # Sanic's default since 23.3, which Rasa serves on
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stopping: asyncio.Event | None = None
    _address: tuple[str, int] | None = None

    def start(self: ServedOnLoop, host: str = "127.0.0.1", port: int = 0) -> ServedOnLoop:
        listening: Future[None] = Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(host, port, listening),), daemon=True,
                                        name=f"{type(self).__name__} on {host}:{port}")
        self._thread.start()
        try:
            listening.result()  # bound, or why not (a port in use)
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self

    def run(self: ServedOnLoop, host: str, port: int, on_listening: Callable[[ServedOnLoop], None]) -> None:
        """Serve in the foreground until SIGINT or SIGTERM; `on_listening` once the port is bound."""
        def announce(listening: Future[None]) -> None:
            if listening.exception() is None:
                on_listening(self)

        listening: Future[None] = Future()
        listening.add_done_callback(announce)
        asyncio.run(self._serve(host, port, listening, until_signalled=True))

    def stop(self) -> None:
        """Ends every `_pause` at once, lets the answers go out, closes the connections."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = self._address = None

    def __enter__(self: ServedOnLoop) -> ServedOnLoop:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._address is not None, f"start() the {type(self).__name__} first"
        return "http://{}:{}".format(*self._address)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raise NotImplementedError

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the server stops: a slow answer must not hold up `stop()`."""
        assert self._stopping is not None, "only while serving"
        if seconds > 0 and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()

    def _on_loop(self) -> None:
        """Called on the serving loop before it listens: where a subclass makes what belongs to one loop (locks)."""

    async def _serve(self, host: str, port: int, listening: Future[None], until_signalled: bool = False) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._on_loop()
        if until_signalled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._stopping.set)
        server = web.Server(self._handle, access_log=None, keepalive_timeout=self.keepalive_seconds)
        runner = web.ServerRunner(server, shutdown_timeout=10.0)  # for answers still going out once stopping
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
            self._address = runner.addresses[0][:2]
            listening.set_result(None)
            await self._stopping.wait()
        except BaseException as exc:
            if not listening.done():
                listening.set_exception(exc)
            raise
        finally:
            await runner.cleanup()


def until_signalled() -> threading.Event:
    """An event that SIGINT or SIGTERM sets: a foreground server's cue to stop."""
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    return done


class _Server(ThreadedWSGIServer):
    request_queue_size = BACKLOG


class _QuietHandler(WSGIRequestHandler):
    # HTTP/1.1 answers, as Twilio's API gives them. werkzeug's development server still closes the connection after
    # each one (werkzeug/serving.py: "Always close the connection"): a client of a stand-in served here pays a new
    # connection per request, which is why the Rasa stand-in, counted by the benchmarks, is a LocalEventLoopServer.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Benchmarks send thousands of requests; one log line each would drown the bridge's own logs."""
