"""What the bridge sent one user through a fake Messages API (REST mode), as it arrives, for the chat simulator.

`--fake-api PORT` starts the fake here, with this configuration's account SID and token, so the
bridge started with `TWILIO_API_BASE_URL=http://127.0.0.1:PORT` and the same twilio.env sends to it;
`--fake-api URL` watches one already running (`python -m twilio_bridge.testing.fake_twilio_api`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests

from .fake_twilio_api import ACCOUNT_SID, FakeTwilioAPI

POLL_SECONDS = 0.1
QUIET_SECONDS = 0.8  # a turn's replies go out back to back; this long without one ends the turn


class OutboxError(Exception):
    """The fake Messages API cannot be started or read."""


class Outbox:
    def __init__(self, base_url: str, to: str, api: FakeTwilioAPI | None = None, quiet: float = QUIET_SECONDS):
        self.base_url = base_url.rstrip("/")
        self.to = to
        self.api = api  # the fake this process runs, if it runs one
        self.quiet = quiet
        self.session = requests.Session()
        self.seen = {message["sid"] for message in self._recorded()}  # earlier chats' replies are not this one's

    def arrivals(self, timeout: float) -> Iterator[dict[str, Any]]:
        """New messages to this user as they arrive, until `quiet` seconds pass without one after the
        first, or `timeout` seconds without any."""
        deadline = time.monotonic() + timeout
        while True:
            new = [message for message in self._recorded() if message["sid"] not in self.seen]
            for message in new:
                self.seen.add(message["sid"])
                yield message
            if new:
                deadline = time.monotonic() + self.quiet
            if time.monotonic() >= deadline:
                return
            time.sleep(POLL_SECONDS)

    def add_media(self, data: bytes, content_type: str) -> str:
        """Keep an attachment in the fake, as Twilio keeps a user's media: the MediaUrl to post."""
        if self.api is not None:
            return self.api.add_media(data, content_type)
        try:
            response = self.session.post(f"{self.base_url}/_fake/media", data=data,
                                         headers={"Content-Type": content_type}, timeout=10)
        except requests.RequestException as exc:
            raise OutboxError(f"cannot reach the fake Twilio API at {self.base_url}: {type(exc).__name__}") from exc
        if response.status_code != 201:
            raise OutboxError(f"{self.base_url}/_fake/media answered HTTP {response.status_code}")
        return str(response.json()["url"])

    def close(self) -> None:
        self.session.close()
        if self.api is not None:
            self.api.stop()

    def _recorded(self) -> list[dict[str, Any]]:
        url = f"{self.base_url}/_fake/messages"
        try:
            response = self.session.get(url, params={"to": self.to}, timeout=5)
        except requests.RequestException as exc:
            raise OutboxError(f"cannot reach the fake Messages API at {self.base_url}: "
                                    f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            raise OutboxError(f"{url} answered HTTP {response.status_code}; is it the fake Messages API?")
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages


def open_outbox(where: str, to: str, account_sid: str | None, auth_token: str | None) -> Outbox:
    """`where` is a port to run the fake on here, or the URL of one that runs elsewhere."""
    if not where.isdigit():
        if not where.startswith(("http://", "https://")):
            raise OutboxError(f"--fake-api takes a port or an http:// URL, not {where!r}")
        return Outbox(where, to)
    api = FakeTwilioAPI(account_sid or ACCOUNT_SID, auth_token or "fake-auth-token")
    try:
        api.start("127.0.0.1", int(where))
    except (OSError, SystemExit) as exc:  # werkzeug exits when the port is taken, after saying so
        raise OutboxError(f"cannot listen on port {where}; if a fake Messages API runs there, "
                                f"give its URL: --fake-api http://127.0.0.1:{where}") from exc
    return Outbox(api.base_url, to, api)
