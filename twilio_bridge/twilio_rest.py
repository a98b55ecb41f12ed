"""The one way the bridge builds a client for Twilio's REST API, and says why a request to it got no answer.

Every REST host the bridge calls (api, content, messaging) takes its origin from TWILIO_API_BASE_URL
when that is not Twilio's own, so one local fake serves them all in tests.
"""
from __future__ import annotations

import re

import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_API_ORIGIN = "https://api.twilio.com"
OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")  # urllib3 buries the socket's error in its message


def twilio_client(account_sid: str, auth_token: str, api_base_url: str, timeout: float) -> Client:
    """A twilio `Client` with a timeout on every request, pointed at `api_base_url`."""
    # Credentials come from Settings; passing them as the client's environment keeps it from reading os.environ.
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout),
                    environment={"TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token})
    if api_base_url.rstrip("/") != TWILIO_API_ORIGIN:
        for domain in (client.api, client.content, client.messaging):
            domain.base_url = api_base_url
    return client


def network_problem(exc: requests.RequestException, timeout: float) -> str:
    """Where and why a request to Twilio got no answer, in words an operator can act on:
    `POST https://api.twilio.com/…/Messages.json: connection refused`."""
    where = f"{exc.request.method} {exc.request.url}: " if exc.request is not None else ""
    if isinstance(exc, requests.Timeout):
        return f"{where}no answer within {timeout:g} s"
    cause = OS_ERROR.search(str(exc))
    return where + (cause.group(1).strip().lower() if cause else type(exc).__name__)
