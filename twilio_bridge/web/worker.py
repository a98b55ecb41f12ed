"""The gunicorn worker the bridge runs under: gthread, whose threads serve a kept-alive connection's next
request themselves when it comes at once (gunicorn.conf.py's `worker_class`).

gunicorn's gthread passes each request on a kept-alive connection through three threads: the main loop
sees the socket readable and submits the connection to the pool; a pool thread serves the request; the
future's callback wakes the main loop through a pipe to put the socket back in its poller. Three wake-ups
of a thread that must then take the GIL cost 0.4 ms of a turn's latency at the median on these machines
(bench/README.md, "Issue 16, fourth session"). Here the pool thread that has written an answer
waits up to NEXT_REQUEST_WAIT for the connection's next request and serves it: what nginx's pooled
upstream connections send under load, a request right after another.

The thread lets the connection go back to the poller, as gthread does, when the wait passes, when the
worker is stopping, and when the pool has no thread to spare, looked at before the wait and again when
the next request comes: a request on another connection then gets the next thread that finishes, and
the connection's own request queues behind it. (This worker's first version served its own connection
whatever the pool's state, and left such a request waiting for as long as the clients kept sending:
seconds, at 500 calls on 500 threads.) What a waiting thread can still cost another request is the
wait itself: one that comes while every other thread is busy is served when the wait ends, within 20 ms.
"""
from __future__ import annotations

import select
import threading

from gunicorn.workers import gthread

NEXT_REQUEST_WAIT = 0.02  # s: a client on this host or LAN sends at once; a caller's next turn comes seconds later


class ThreadWorker(gthread.ThreadWorker):
    next_request_wait = NEXT_REQUEST_WAIT

    def init_process(self) -> None:
        self._serving = 0  # threads in handle(): serving, or waiting for a kept connection's next request
        # (or, in gthread's handle, for a new connection's first bytes)
        self._counting = threading.Lock()
        super().init_process()

    def handle(self, conn: gthread.TConn) -> object:
        """Serve the request that made the connection readable, then each next one that follows within the wait
        while the pool has a thread to spare for other connections. Returns as gthread's: True keeps the
        connection (back to the poller), anything else closes or defers it."""
        with self._counting:
            self._serving += 1
        try:
            kept = super().handle(conn)
            while (kept is True and self.alive and self._threads_to_spare() and self._next_request_comes(conn)
                   and self._threads_to_spare()):  # the pool may have filled during the wait
                kept = super().handle(conn)
            return kept
        finally:
            with self._counting:
                self._serving -= 1

    def _threads_to_spare(self) -> bool:
        """Another connection's request would find a thread free (idle in the pool, or one the pool may add)."""
        return self._serving < self.cfg.threads

    def _next_request_comes(self, conn: gthread.TConn) -> bool:
        """Whether the connection is readable within the wait: a request, or the client closing it."""
        if conn.parser.unreader.buf.getvalue():  # read ahead with the last request's body
            return True
        readable = select.poll()  # not select.select: a busy worker's descriptors pass 1024
        readable.register(conn.sock, select.POLLIN)
        return bool(readable.poll(self.next_request_wait * 1000))
