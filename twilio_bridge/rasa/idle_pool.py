"""Connection pools that never send a request on a connection the server may be closing.

A server closes a kept-alive connection once it has been idle for its keep-alive timeout. urllib3 looks for
the server's FIN before reusing a pooled connection, but a FIN still on its way when the request leaves is
missed: the request meets a closing socket ("Connection aborted", RemoteDisconnected or a reset), and the
Rasa client may not send it again, since Rasa may have read it. A connection idle for IDLE_LIMIT is closed
instead of reused, and urllib3 opens it afresh on use, as it does a dropped one: no request ever goes out
at the moment the server times the connection out.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from urllib3 import PoolManager
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection  # what urllib3's own signatures name

# Rasa serves on Sanic, which closes a connection idle for KEEP_ALIVE_TIMEOUT: 5 s by default up to Sanic 23.3,
# 120 s from 23.6 (sanic-org/sanic#2670). Rasa Open Source 3.6 ships Sanic 21.12: 3.6.0 to 3.6.14 keep its 5 s;
# 3.6.15 and later, and Rasa Pro 3.21 (Sanic 25.12), set 120 s themselves (rasa/core/constants.py). 4 s stays
# below either, with a second for a loaded machine, so one setting serves every Rasa (a proxy in front of it must
# keep idle connections longer than that). Reopening costs a turn under 0.5 ms on loopback (bench/keepalive_race.py).
IDLE_LIMIT = 4.0
IDLE_SINCE = "_idle_since"  # set on a connection as it goes back to the pool; it is one thread's until then

Clock = Callable[[], float]


class IdleLimitedHTTPConnectionPool(HTTPConnectionPool):
    """Closes, instead of reusing, a connection that has been idle for `idle_limit` seconds or more."""

    def __init__(self, host: str, port: int | None = None, *, idle_limit: float = IDLE_LIMIT,
                 clock: Clock = time.monotonic, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.idle_limit = idle_limit
        self.clock = clock

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, IDLE_SINCE, None)
        if idle_since is not None and self.clock() - idle_since >= self.idle_limit:
            conn.close()  # reopened on use
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None:
            setattr(conn, IDLE_SINCE, self.clock())
        super()._put_conn(conn)


class IdleLimitedHTTPSConnectionPool(IdleLimitedHTTPConnectionPool, HTTPSConnectionPool):
    """The same over TLS, for a Rasa behind a TLS proxy or load balancer."""


class IdleLimitedPoolManager(PoolManager):
    """A PoolManager whose pools, for http and https alike, never reuse a connection idle for `idle_limit`."""

    def __init__(self, idle_limit: float = IDLE_LIMIT, clock: Clock = time.monotonic, **pool_kw: Any) -> None:
        super().__init__(**pool_kw)
        self.pool_classes_by_scheme = {"http": IdleLimitedHTTPConnectionPool, "https": IdleLimitedHTTPSConnectionPool}
        self.idle_limit = idle_limit
        self.clock = clock

    def _new_pool(self, scheme: str, host: str, port: int,
                  request_context: dict[str, Any] | None = None) -> HTTPConnectionPool:
        # Handed to the pool here, not through the pool keywords, which also make the pool's key and accept no others.
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        return super()._new_pool(scheme, host, port, {**context, "idle_limit": self.idle_limit, "clock": self.clock})
