"""The gunicorn worker the bridge runs under: gthread, whose threads serve a kept-alive connection's next
request themselves when it comes at once (gunicorn.conf.py's `worker_class`).

gunicorn's gthread passes each request on a kept-alive connection through three threads: the main loop
sees the socket readable and submits the connection to the pool; a pool thread serves the request; the
future's callback wakes the main loop through a pipe to put the socket back in its poller. Three wake-ups
of a thread that must then take the GIL cost 0.4 ms of a turn's latency and a tenth of its CPU on these
machines (bench/README.md, "Issue 16, fourth session"). Here the pool thread that has written an answer
waits up to NEXT_REQUEST_WAIT for the connection's next request and serves it: what nginx's pooled
upstream connections send under load, a request right after another. Past the wait, or when the worker
is stopping, the connection goes back to the poller as in gthread, so an idle connection never holds a
thread for longer than that.
"""
from __future__ import annotations

import select

from gunicorn.workers import gthread

NEXT_REQUEST_WAIT = 0.02  # s: a client on this host or LAN sends at once; a caller's next turn comes seconds later


class ThreadWorker(gthread.ThreadWorker):
    next_request_wait = NEXT_REQUEST_WAIT

    def handle(self, conn: gthread.TConn) -> object:
        """Serve the request that made the connection readable, then each next one that follows within the wait.
        Returns as gthread's: True keeps the connection (back to the poller), anything else closes or defers it."""
        kept = super().handle(conn)
        while kept is True and self.alive and self._next_request_comes(conn):
            kept = super().handle(conn)
        return kept

    def _next_request_comes(self, conn: gthread.TConn) -> bool:
        """Whether the connection is readable within the wait: a request, or the client closing it."""
        if conn.parser.unreader.buf.getvalue():  # read ahead with the last request's body
            return True
        readable = select.poll()  # not select.select: a busy worker's descriptors pass 1024
        readable.register(conn.sock, select.POLLIN)
        return bool(readable.poll(self.next_request_wait * 1000))
