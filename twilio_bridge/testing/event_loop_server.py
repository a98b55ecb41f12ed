"""Serving an aiohttp handler over real HTTP on 127.0.0.1 from one event loop: the Rasa stand-in's server.

On a background thread for tests, benchmarks and the demo, or in the foreground for a command line until SIGINT or
SIGTERM. Connections are kept alive, as Rasa (Sanic) keeps them, and a slow answer is an asyncio wait, so hundreds
of calls held by a slow assistant cost no thread each. aiohttp comes with twilio: no dependency of its own, but
8 MB and a sixth of a second to import, which the bridge's processes must not pay: nothing they import imports this.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from aiohttp import web

Served = TypeVar("Served", bound="EventLoopServer")
BACKLOG = 1024  # hundreds of callers connect at once in the benchmarks


class EventLoopServer:
    """A subclass answers in `_handle`, a coroutine; `.start()`, or `with`, serves it on host:port (port 0: a free
    one) from an event loop on a background thread, `.run()` in the foreground. A slow answer waits in `_pause`,
    which `stop()` ends at once; what is answering then is answered before the connections close."""

    keepalive_seconds = 120.0  # what Rasa 3.6.15+ and Rasa Pro set (Sanic's default since 23.6, 5 s before)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stopping: asyncio.Event | None = None
    _address: tuple[str, int] | None = None

    def start(self: Served, host: str = "127.0.0.1", port: int = 0) -> Served:
        listening: Future[None] = Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(host, port, listening),), daemon=True,
                                        name=f"{type(self).__name__} on {host}:{port}")
        self._thread.start()
        try:
            listening.result()  # bound, or why not (a port in use: SystemExit, with the port named)
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self

    def run(self: Served, host: str, port: int, on_listening: Callable[[Served], None]) -> None:
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

    def __enter__(self: Served) -> Served:
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
            self._address = await _listen(runner, host, port)
            listening.set_result(None)
            await self._stopping.wait()
        except BaseException as exc:
            if not listening.done():
                listening.set_exception(exc)
            raise
        finally:
            await runner.cleanup()


async def _listen(runner: web.ServerRunner, host: str, port: int) -> tuple[str, int]:
    """The address bound; a port in use is said in one line (SystemExit), as werkzeug says it for the bridge."""
    try:
        await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise SystemExit(f"Port {port} is in use by another program: stop it, or choose another port.") from None
    return runner.addresses[0][:2]
