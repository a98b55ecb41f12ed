"""The one way the bridge talks to Rasa's REST channel."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

Metadata = dict[str, Any]


class RasaError(Exception):
    """Rasa gave no usable answer. `kind` says why: unreachable, timeout, status, invalid."""

    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(f"rasa {kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


class RasaClient:
    """One session per worker; a timeout on every call.

    Only a connection that never opened is retried: once Rasa has the message it may
    have acted on it, and sending it again would run the dialogue twice.
    """

    def __init__(self, webhook_url: str, timeout: float, session: requests.Session | None = None,
                 pool_size: int = 64):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.connect_timeout = min(2.0, timeout / 3)
        self.session = session or requests.Session()
        retry = Retry(total=None, connect=1, read=False, status=0, other=0, redirect=0, backoff_factor=0.05)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, sender: str, message: str, metadata: Metadata | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        """Post one message; return Rasa's list of reply items (may be empty)."""
        body = {"sender": sender, "message": message, "metadata": metadata or {}}
        try:
            response = self.session.post(
                self.webhook_url, json=body, timeout=(self.connect_timeout, timeout or self.timeout)
            )
        except requests.ConnectTimeout as exc:
            raise RasaError("unreachable", f"no connection within {self.connect_timeout:g}s") from exc
        except requests.Timeout as exc:
            raise RasaError("timeout", f"no answer within {timeout or self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise RasaError("unreachable", _short(exc)) from exc
        if response.status_code != 200:
            raise RasaError("status", f"HTTP {response.status_code}", status=response.status_code)
        try:
            items = response.json()
        except ValueError as exc:
            raise RasaError("invalid", "answer is not JSON") from exc
        if not isinstance(items, list):
            raise RasaError("invalid", f"answer is a JSON {type(items).__name__}, not a list")
        return [item for item in items if isinstance(item, dict)]

    def version(self, origin: str, timeout: float = 2.0) -> str:
        """Rasa's `GET /` greeting ('Hello from Rasa: 3.21.0'), for health checks."""
        try:
            response = self.session.get(origin + "/", timeout=(min(timeout, self.connect_timeout), timeout))
        except requests.RequestException as exc:
            raise RasaError("unreachable", _short(exc)) from exc
        if response.status_code != 200:
            raise RasaError("status", f"HTTP {response.status_code}", status=response.status_code)
        return response.text.strip()[:100]


    def action_server_health(self, action_server_url: str, timeout: float = 2.0) -> str:
        """The action server's `GET /health` (rasa-sdk answers {"status": "ok"}), at the origin of its URL
        as Rasa's endpoints.yml names it (http://localhost:5055/webhook). Raises RasaError."""
        parts = urlsplit(action_server_url)
        try:
            response = self.session.get(f"{parts.scheme}://{parts.netloc}/health",
                                        timeout=(min(timeout, self.connect_timeout), timeout))
        except requests.RequestException as exc:
            raise RasaError("unreachable", _short(exc)) from exc
        if response.status_code != 200:
            raise RasaError("status", f"HTTP {response.status_code}", status=response.status_code)
        try:
            status = response.json().get("status")
        except (ValueError, AttributeError) as exc:
            raise RasaError("invalid", "answer is not a JSON object") from exc
        if status != "ok":
            raise RasaError("invalid", f"status {status!r}, not 'ok'")
        return status


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
