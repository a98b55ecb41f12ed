"""Sending a message through Twilio's Messages API, with one error type that says whether to try again.

A message is a body and/or media, or a Content API template (ContentSid, with its ContentVariables).
"""
from __future__ import annotations

import json
import re

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ..whatsapp.replies import Outgoing

SEND_TIMEOUT = 10.0
WINDOW_CLOSED = 63016  # a free-form WhatsApp message more than 24 h after the user's last one
OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")  # urllib3 buries the socket's error in its message


class SendError(Exception):
    """Twilio did not take the message. `retryable`: 429, 5xx or the network; never other 4xx."""

    def __init__(self, detail: str, retryable: bool, status: int | None = None, code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.code = code


def twilio_client(account_sid: str, auth_token: str, api_base_url: str, timeout: float) -> Client:
    """A twilio `Client` whose every REST host (api, content, messaging) is TWILIO_API_BASE_URL when it is set
    elsewhere than Twilio: one local fake then serves them all."""
    # Credentials come from Settings; passing them as the client's environment keeps it from reading os.environ.
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout),
                    environment={"TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token})
    if api_base_url.rstrip("/") != "https://api.twilio.com":
        for domain in (client.api, client.content, client.messaging):
            domain.base_url = api_base_url
    return client


class MessageSender:
    """One twilio `Client` per process: one requests session shared by the delivery threads."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str, timeout: float = SEND_TIMEOUT):
        self.client = twilio_client(account_sid, auth_token, api_base_url, timeout)
        self.timeout = timeout

    def send(self, to: str, from_: str, message: Outgoing, status_callback: str | None = None) -> str:
        """Create one message; its sid. Raises SendError."""
        try:
            created = self.client.messages.create(
                to=to, from_=from_,
                body=message.body or values.unset,
                media_url=[message.media_url] if message.media_url else values.unset,
                content_sid=message.content_sid or values.unset,
                content_variables=json.dumps(message.content_variables) if message.content_variables else values.unset,
                status_callback=status_callback or values.unset,
            )
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            code = getattr(exc, "code", None)
            retryable = status is not None and (status == 429 or status >= 500)
            raise SendError(str(getattr(exc, "msg", exc))[:200], retryable, status, code) from exc
        except requests.RequestException as exc:
            raise SendError(network_problem(exc, self.timeout), True) from exc
        return str(created.sid)


def network_problem(exc: requests.RequestException, timeout: float) -> str:
    """Where and why a request to Twilio got no answer, in words an operator can act on:
    `POST https://api.twilio.com/…/Messages.json: connection refused`."""
    where = f"{exc.request.method} {exc.request.url}: " if exc.request is not None else ""
    if isinstance(exc, requests.Timeout):
        return f"{where}no answer within {timeout:g} s"
    cause = OS_ERROR.search(str(exc))
    return where + (cause.group(1).strip().lower() if cause else type(exc).__name__)
