"""The fake Messages API's plumbing: a WSGI app served over real HTTP on werkzeug's threads, on 127.0.0.1.

Used by the fake Messages API (tests, benchmarks, the chat simulator), on a background thread, and by its command
line, which serves in the foreground until SIGINT or SIGTERM. The Rasa stand-in is served by event_loop_server
instead: werkzeug closes every connection after one answer, and holds a thread per connection.
"""
from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

Served = TypeVar("Served", bound="LocalServer")


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


def until_signalled() -> threading.Event:
    """An event that SIGINT or SIGTERM sets: a foreground server's cue to stop."""
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    return done


class _Server(ThreadedWSGIServer):
    request_queue_size = 1024  # hundreds of callers connect at once in the benchmarks


class _QuietHandler(WSGIRequestHandler):
    # HTTP/1.1 answers, as Twilio's API gives them. werkzeug's development server still closes the connection after
    # each one (werkzeug/serving.py: "Always close the connection"): a client of a stand-in served here pays a new
    # connection per request, which is why the Rasa stand-in, counted by the benchmarks, is served by event_loop_server.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Benchmarks send thousands of requests; one log line each would drown the bridge's own logs."""
