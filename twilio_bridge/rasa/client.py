"""The one way the bridge talks to Rasa's REST channel."""
from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

from .connections import IDLE_LIMIT, BrokenAnswer, CannotConnect, Clock, Connection, Origin, Pool, request, target

Metadata = dict[str, Any]


class RasaError(Exception):
    """Rasa gave no usable answer. `kind` says why: unreachable, timeout, status, invalid. `resendable` when
    sending the message again cannot run the dialogue twice: Rasa never had it (the connection never opened),
    or answered that it did not run it (a status other than 504, below)."""

    def __init__(self, kind: str, detail: str, status: int | None = None, *, resendable: bool = False):
        super().__init__(f"rasa {kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status
        self.resendable = resendable


class Reply:
    """A request sent to Rasa, its answer still to come: the thread that sent it may wait for the answer
    (`arrives`) and read it (`items`, `data`), or hand it to another thread that does, within the request's
    time. So a voice turn reads a quick answer itself, and only a slow one goes to a thread that holds it."""

    def __init__(self, pool: Pool, conn: Connection, sent_at: float, timeout: float, clock: Clock):
        self.sent_at = sent_at  # `clock()` as the request was about to be sent
        self.timeout = timeout
        self._pool, self._conn, self._clock = pool, conn, clock

    def elapsed(self) -> float:
        """Seconds since the request was sent."""
        return self._clock() - self.sent_at

    def arrives(self, within: float | None = None) -> bool:
        """Whether the answer, or the end of the connection, begins to come within `within` seconds (by
        default, the request's time left)."""
        return self._conn.readable(self.timeout - self.elapsed() if within is None else within)

    def items(self, within: float | None = None) -> list[dict[str, Any]]:
        """Rasa's list of reply items (may be empty), as `data` reads them. Raises RasaError."""
        try:
            items = json.loads(self.data(within))
        except ValueError as exc:
            raise RasaError("invalid", "answer is not JSON") from exc
        if not isinstance(items, list):
            raise RasaError("invalid", f"answer is a JSON {type(items).__name__}, not a list")
        return [item for item in items if isinstance(item, dict)]

    def data(self, within: float | None = None) -> bytes:
        """The body of Rasa's 200 answer, read within `within` seconds and the request's own timeout; the
        connection goes back to the pool. Raises RasaError."""
        left = self.timeout - self.elapsed()
        limit = max(0.001, min(left, within) if within is not None else left)
        try:
            answer = self._conn.receive(self._clock() + limit)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, TimeoutError):
                detail = (f"no answer within {self.timeout:g}s" if limit >= left
                          else f"the answer did not end within {limit:.2g}s")
                raise RasaError("timeout", detail) from exc
            if isinstance(exc, BrokenAnswer):
                raise RasaError("invalid", str(exc)) from exc
            if isinstance(exc, OSError):  # it closed or broke the connection after it had the request
                raise RasaError("unreachable", _short(exc)) from exc
            raise
        if answer.reusable:
            self._pool.put(self._conn)
        else:
            self._conn.close()
        if answer.status != 200:
            # Rasa's REST channel answers 200 even when its dialogue failed, so another status came before the
            # dialogue ran; but a 504 is a proxy in front that stopped waiting while Rasa may still be at work
            raise RasaError("status", f"HTTP {answer.status}", status=answer.status, resendable=answer.status != 504)
        return answer.body

    def abandon(self) -> None:
        """The answer will not be read: the connection is closed (Rasa goes on with the request)."""
        self._conn.close()


class RasaClient:
    """One pool of kept-alive connections to Rasa per worker; a timeout on every call.

    Every message is sent on a pooled connection and its answer read from it in two steps (`post`, then
    `Reply.items`), so that the two may happen in different threads. Only a connection that never opened is
    retried: once Rasa has the message it may have acted on it, and sending it again would run the dialogue
    twice. So a connection idle for `idle_limit` seconds, which Rasa may be closing, is replaced rather than
    reused (connections.Pool).
    """

    def __init__(self, webhook_url: str, timeout: float, pool_size: int = 64, connect_retries: int = 1, *,
                 idle_limit: float = IDLE_LIMIT, clock: Clock = time.monotonic):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.connect_timeout = min(2.0, timeout / 3)
        self.connect_retries = connect_retries
        self.clock = clock
        origin = Origin(webhook_url)
        self.pool = Pool(origin, pool_size, idle_limit, clock)
        self._webhook_head = origin.head("POST", target(webhook_url), "application/json")  # once, not per message
        # The health checks' origins, each made once (over TLS, an origin loads the system's CAs): Rasa's own is
        # the webhook's, the action server's is made on its first check.
        parts = urlsplit(webhook_url)
        self._origins = {f"{parts.scheme}://{parts.netloc}": origin}

    def send(self, sender: str, message: str, metadata: Metadata | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        """Post one message; return Rasa's list of reply items (may be empty)."""
        return self.post(sender, message, metadata, timeout).items()

    def post(self, sender: str, message: str, metadata: Metadata | None = None, timeout: float | None = None) -> Reply:
        """Send one message; its answer is the Reply's to read, within `timeout` (RASA_TIMEOUT) of now."""
        body = json.dumps({"sender": sender, "message": message, "metadata": metadata or {}}).encode()
        return self._send(self.pool, request(self._webhook_head, body), timeout or self.timeout, self.connect_timeout)

    def version(self, origin: str, timeout: float = 2.0) -> str:
        """Rasa's `GET /` greeting ('Hello from Rasa: 3.21.0'), for health checks."""
        data = self._get(origin, "/", timeout)
        return data.decode("utf-8", "replace").strip()[:100]

    def action_server_health(self, action_server_url: str, timeout: float = 2.0) -> str:
        """The action server's `GET /health` (rasa-sdk answers {"status": "ok"}), at the origin of its URL
        as Rasa's endpoints.yml names it (http://localhost:5055/webhook). Raises RasaError."""
        parts = urlsplit(action_server_url)
        data = self._get(f"{parts.scheme}://{parts.netloc}", "/health", timeout)
        try:
            status = json.loads(data).get("status")
        except (ValueError, AttributeError) as exc:
            raise RasaError("invalid", "answer is not a JSON object") from exc
        if status != "ok":
            raise RasaError("invalid", f"status {status!r}, not 'ok'")
        return status

    def _get(self, url: str, path: str, timeout: float) -> bytes:
        """A health check's GET at the origin `url`, on a connection of its own that is closed once answered."""
        origin = self._origins.get(url) or self._origins.setdefault(url, Origin(url))
        once = Pool(origin, size=0, clock=self.clock)
        return self._send(once, request(origin.head("GET", path)), timeout, min(timeout, self.connect_timeout)).data()

    def _send(self, pool: Pool, whole_request: bytes, timeout: float, connect_timeout: float) -> Reply:
        """The request sent on a connection of `pool`, its answer to read within `timeout`. A connection that
        never opened is tried again (`connect_retries`); one that broke while the request went out is not."""
        sent_at, retries_left = self.clock(), self.connect_retries
        connect_timeout = min(connect_timeout, timeout)  # to connect and to send
        while True:
            try:
                conn = pool.connection(connect_timeout)
                break
            except CannotConnect as exc:  # Rasa has nothing
                if not retries_left:
                    raise RasaError("unreachable", _short(exc), resendable=True) from exc
                retries_left -= 1
        try:
            conn.send(whole_request, connect_timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError):  # it broke while the request went out: Rasa may have it
                raise RasaError("unreachable", _short(exc)) from exc
            raise
        return Reply(pool, conn, sent_at, timeout, self.clock)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
