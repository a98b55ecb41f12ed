"""Sending a message through Twilio's Messages API, with one error type that says whether to try again.

A message is a body and/or media, or a Content API template (ContentSid, with its ContentVariables).
"""
from __future__ import annotations

import json

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException

from ..twilio_rest import twilio_client, twilio_failure
from ..whatsapp.replies import Outgoing

SEND_TIMEOUT = 10.0
WINDOW_CLOSED = 63016  # a free-form WhatsApp message more than 24 h after the user's last one


class SendError(Exception):
    """Twilio did not take the message. `retryable`: 429, 5xx, the network or 21611; never other 4xx."""

    def __init__(self, detail: str, retryable: bool, status: int | None = None, code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.code = code



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
        except (TwilioException, requests.RequestException) as exc:
            failure = twilio_failure(exc, self.timeout)
            raise SendError(failure.detail, failure.retryable, failure.status, failure.code) from exc
        return str(created.sid)
