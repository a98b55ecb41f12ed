"""A WSGI app that answers with the thread serving it (or, at /peer, the client's port), and workers for
tests/web/test_worker.py."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from twilio_bridge.web.worker import ThreadWorker


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    body = (b"ok" if path == "/health" else str(environ["REMOTE_PORT"]).encode() if path == "/peer"
            else str(threading.get_ident()).encode())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class PatientWorker(ThreadWorker):
    """The bridge's worker waiting a minute for a kept connection's next request: longer than any test takes."""

    next_request_wait = 60.0
