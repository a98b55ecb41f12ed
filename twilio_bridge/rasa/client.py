"""The one way the bridge talks to Rasa's REST channel."""
from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util import Retry, Timeout

from .idle_pool import IDLE_LIMIT, Clock, IdleLimitedPoolManager

Metadata = dict[str, Any]
JSON = {"Content-Type": "application/json"}


class RasaError(Exception):
    """Rasa gave no usable answer. `kind` says why: unreachable, timeout, status, invalid."""

    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(f"rasa {kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


class RasaClient:
    """One connection pool per worker; a timeout on every call.

    urllib3 itself, without requests on top: Rasa is one internal origin, so requests' sessions,
    cookies, proxies from the environment and .netrc only cost time (several times what urllib3
    takes for the whole call to a local Rasa; bench/README.md).
    Only a connection that never opened is retried: once Rasa has the message it may
    have acted on it, and sending it again would run the dialogue twice. So a connection idle for
    `idle_limit` seconds, which Rasa may be closing, is reopened rather than reused (idle_pool).
    """

    def __init__(self, webhook_url: str, timeout: float, pool: urllib3.PoolManager | None = None,
                 pool_size: int = 64, connect_retries: int = 1, *, idle_limit: float = IDLE_LIMIT,
                 clock: Clock = time.monotonic):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.connect_timeout = min(2.0, timeout / 3)
        retry = Retry(total=None, connect=connect_retries, read=False, status=0, other=0, redirect=0, backoff_factor=0.05,
                      raise_on_status=False)
        self.pool = pool or IdleLimitedPoolManager(idle_limit, clock, num_pools=4, maxsize=pool_size, retries=retry)

    def send(self, sender: str, message: str, metadata: Metadata | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        """Post one message; return Rasa's list of reply items (may be empty)."""
        body = json.dumps({"sender": sender, "message": message, "metadata": metadata or {}}).encode()
        response = self._request("POST", self.webhook_url, timeout or self.timeout, body=body, headers=JSON)
        try:
            items = json.loads(response.data)
        except ValueError as exc:
            raise RasaError("invalid", "answer is not JSON") from exc
        if not isinstance(items, list):
            raise RasaError("invalid", f"answer is a JSON {type(items).__name__}, not a list")
        return [item for item in items if isinstance(item, dict)]

    def version(self, origin: str, timeout: float = 2.0) -> str:
        """Rasa's `GET /` greeting ('Hello from Rasa: 3.21.0'), for health checks."""
        response = self._request("GET", origin + "/", timeout, connect_timeout=min(timeout, self.connect_timeout))
        return response.data.decode("utf-8", "replace").strip()[:100]

    def _request(self, method: str, url: str, timeout: float, connect_timeout: float | None = None,
                 **options: Any) -> urllib3.BaseHTTPResponse:
        """Rasa's 200 answer, or the RasaError that says why there is none."""
        connect = connect_timeout or self.connect_timeout
        try:
            response = self.pool.request(method, url, timeout=Timeout(connect=connect, read=timeout),
                                         redirect=False, **options)
        except MaxRetryError as exc:  # the connection never opened, twice
            if isinstance(exc.reason, ConnectTimeoutError) and not isinstance(exc.reason, NewConnectionError):
                raise RasaError("unreachable", f"no connection within {connect:g}s") from exc
            raise RasaError("unreachable", _short(exc.reason or exc)) from exc
        except ReadTimeoutError as exc:
            raise RasaError("timeout", f"no answer within {timeout:g}s") from exc
        except (HTTPError, OSError) as exc:  # it closed or broke the connection after it had the request
            raise RasaError("unreachable", _short(exc)) from exc
        if response.status != 200:
            raise RasaError("status", f"HTTP {response.status}", status=response.status)
        return response

    def action_server_health(self, action_server_url: str, timeout: float = 2.0) -> str:
        """The action server's `GET /health` (rasa-sdk answers {"status": "ok"}), at the origin of its URL
        as Rasa's endpoints.yml names it (http://localhost:5055/webhook). Raises RasaError."""
        parts = urlsplit(action_server_url)
        response = self._request("GET", f"{parts.scheme}://{parts.netloc}/health", timeout,
                                 connect_timeout=min(timeout, self.connect_timeout))
        try:
            status = json.loads(response.data).get("status")
        except (ValueError, AttributeError) as exc:
            raise RasaError("invalid", "answer is not a JSON object") from exc
        if status != "ok":
            raise RasaError("invalid", f"status {status!r}, not 'ok'")
        return status


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
