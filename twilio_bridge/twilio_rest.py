"""The one way the bridge builds a client for Twilio's REST API, and says why a request to it got no answer.

Every REST host the bridge calls (api, content, messaging) takes its origin from TWILIO_API_BASE_URL
when that is not Twilio's own, so one local fake serves them all in tests.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

TWILIO_API_ORIGIN = "https://api.twilio.com"
OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")  # urllib3 buries the socket's error in its message
# Twilio's codes for "not now" whatever the HTTP status says: too many requests (20429, a 429), and the From
# number's queue of messages is full (21611, a 400; it empties as the messages go out).
TRY_LATER_CODES = (20429, 21611)


def twilio_client(account_sid: str, auth_token: str, api_base_url: str, timeout: float) -> Client:
    """A twilio `Client` with a timeout on every request, pointed at `api_base_url`."""
    # Credentials come from Settings; passing them as the client's environment keeps it from reading os.environ.
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout),
                    environment={"TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token})
    # twilio imports a domain's modules when it is first used: 95 ms of one core for these three, which would
    # otherwise fall on a worker's first WhatsApp reply while its webhooks wait. Here, at the worker's start.
    domains = (client.api, client.content, client.messaging)
    if api_base_url.rstrip("/") != TWILIO_API_ORIGIN:
        for domain in domains:
            domain.base_url = api_base_url
    return client


def network_problem(exc: requests.RequestException, timeout: float | None = None) -> str:
    """Where and why a request to Twilio got no answer, in words an operator can act on:
    `POST https://api.twilio.com/…/Messages.json: connection refused`."""
    where = f"{exc.request.method} {exc.request.url}: " if exc.request is not None else ""
    if isinstance(exc, requests.Timeout):
        return f"{where}no answer within {timeout:g} s" if timeout else f"{where}no answer in time"
    cause = OS_ERROR.search(str(exc))
    return where + (cause.group(1).strip().lower() if cause else type(exc).__name__)


@dataclass(frozen=True)
class TwilioFailure:
    """Why a request to Twilio's REST API did not succeed: words an operator can act on, and Twilio's HTTP
    status and error code (None when Twilio was never reached)."""

    detail: str
    status: int | None = None
    code: int | None = None

    @property
    def retryable(self) -> bool:
        """Worth trying again: the network, 429, 5xx or a code that says "not now" (TRY_LATER_CODES); never
        another 4xx (63016 or 21211 would fail again)."""
        return self.status is None or self.status == 429 or self.status >= 500 or self.code in TRY_LATER_CODES

    def __str__(self) -> str:
        return self.detail if self.status is None else f"HTTP {self.status} (error {self.code}): {self.detail}"


def twilio_failure(exc: TwilioException | requests.RequestException, timeout: float | None = None) -> TwilioFailure:
    """Read whatever the twilio SDK or the network raised, however the SDK reports it."""
    if isinstance(exc, requests.RequestException):
        return TwilioFailure(network_problem(exc, timeout))
    if isinstance(exc, TwilioRestException):
        return TwilioFailure(str(exc.msg)[:200], exc.status, exc.code)
    if isinstance(exc, TwilioServiceException):
        return TwilioFailure(str(exc.detail or exc.title)[:200], exc.status, exc.code)
    answer = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(answer, Response):  # a list page that failed: the SDK passes the raw answer
        try:
            payload = json.loads(answer.text)
        except ValueError:
            payload = {}
        return TwilioFailure(str(payload.get("message", ""))[:200], answer.status_code, payload.get("code"))
    return TwilioFailure(str(exc)[:200])
