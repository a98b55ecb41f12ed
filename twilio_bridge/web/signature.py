"""Checking that a webhook really comes from Twilio.

Twilio signs the exact URL it called plus the sorted POST parameters. Only a form-encoded body
(or none) can carry a signature the bridge accepts: its webhooks are all form posts, so any other
body is refused before anything reads it. Behind nginx the URL
Flask sees differs from that one, so the public origin comes from PUBLIC_BASE_URL, or from
X-Forwarded-* headers set by a configured number of trusted proxies (ProxyFix), never from
headers a client could forge.
"""
from __future__ import annotations

import hmac
from typing import Mapping

from flask import Request
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from ..routes import websocket_url

FORM_TYPE = "application/x-www-form-urlencoded"
# Twilio's form posts are a few kB (the shipped nginx site passes 64 kB); any signature needs the whole body
# read and parsed in memory, so a longer one is refused without being read: a forged gigabyte is not a webhook.
MAX_BODY = 4 * 1024 * 1024


class SignatureCheck:
    def __init__(self, auth_token: str | None, shared_keys: Mapping[str, str], public_base_url: str | None):
        self.token_validator = RequestValidator(auth_token) if auth_token else None
        self.key_validators = {key_id: RequestValidator(secret) for key_id, secret in shared_keys.items()}
        self.public_base_url = public_base_url

    def public_url(self, request: Request) -> str:
        """The URL Twilio called, as it signed it: a WebSocket upgrade (ConversationRelay) is signed
        for its ws(s):// URL. A scheme that is neither (a forged X-Forwarded-Proto) stays as it is, and
        no signature matches it."""
        if self.public_base_url is None:
            url = request.url
        else:
            query = request.query_string.decode("latin-1")
            url = self.public_base_url + request.root_path + request.path + (f"?{query}" if query else "")
        if request.headers.get("Upgrade", "").lower() == "websocket" and url.startswith(("http://", "https://")):
            url = websocket_url(url)
        return url

    def is_valid(self, request: Request) -> bool:
        """True only when Twilio signed this request; every doubt, and every failure, is a False."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature or not _form_or_empty(request):
            return False
        settings = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
        algorithm = get_signature_algorithm(settings)
        validator = self._validator(settings)
        if validator is None:
            return False
        request.max_content_length = MAX_BODY  # past it, reading the form raises (RequestEntityTooLarge): refused
        url = self.public_url(request)
        try:  # the URL as it came first: one HMAC for a good request, where twilio's validate always does two
            if hmac.compare_digest(validator.compute_signature(url, request.form, algorithm).encode(), signature.encode()):
                return True
        except ValueError:
            pass  # an algorithm Twilio has added since: validate logs it
        return validator.validate(url, request.form, signature, algorithm=algorithm)

    def _validator(self, settings: str) -> RequestValidator | None:
        """The auth token for classic signatures; for shared-key ones, the key the header names."""
        if not settings:
            return self.token_validator
        key_id = next(
            (value.strip() for name, _, value in (p.partition("=") for p in settings.split(","))
             if name.strip() == "key"),
            None,
        )
        return self.key_validators.get(key_id or "")


def _form_or_empty(request: Request) -> bool:
    """Twilio's webhooks are `application/x-www-form-urlencoded`; a JSON, multipart or text body is not one."""
    if request.mimetype == FORM_TYPE:
        return True
    return not request.mimetype and not request.content_length and not request.headers.get("Transfer-Encoding")


def sign(auth_token: str, url: str, params: Mapping[str, str], algorithm: str = HMAC_SHA1) -> str:
    """Twilio's signature for a request, as Twilio computes it (used by the phone simulator and tests)."""
    return RequestValidator(auth_token).compute_signature(url, params, algorithm=algorithm)
