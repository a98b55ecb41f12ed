"""The request hooks of every Twilio-facing blueprint: refuse what Twilio did not sign, and give a
webhook Twilio retries the answer it already got, so the caller's words reach Rasa once."""
from __future__ import annotations

import structlog
from flask import Response, request

from .. import metrics
from ..bridge import bridge
from ..logs import log

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
REPLAY_TTL = 600


def require_twilio_signature() -> Response | None:
    """before_request hook of every Twilio-facing blueprint: 403 unless Twilio signed it."""
    current = bridge()
    if not current.settings.validate_signature:
        log.warning("signature.unchecked", reason="TWILIO_VALIDATE_SIGNATURE=false", path=request.path)
        return None
    if current.signatures.is_valid(request):
        return None
    structlog.contextvars.bind_contextvars(outcome="forbidden")
    metrics.signature_rejected(request.url_rule.rule if request.url_rule else "unmatched")
    log.warning("signature.rejected", path=request.path, url=current.signatures.public_url(request),
                signed=bool(request.headers.get("X-Twilio-Signature")))
    return Response("Forbidden: invalid Twilio signature\n", status=403, mimetype="text/plain")


def replay_retried_webhook() -> Response | None:
    """before_request, after the signature check: a webhook Twilio retries gets the answer it already got.

    Twilio marks retries with I-Twilio-Idempotency-Token; answering again would send the caller's
    words to Rasa twice and run that step of the dialogue twice.
    """
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if not token:
        return None
    answered = bridge().store.get(f"replay:{request.path}:{token}")
    if answered is None:
        return None
    structlog.contextvars.bind_contextvars(outcome="replayed")
    return Response(answered["body"], status=answered["status"], mimetype=answered["mimetype"])


def remember_answer(response: Response) -> Response:
    """after_request: keep what a webhook answered, for a retry of it."""
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if token and response.status_code < 500 and not response.direct_passthrough:
        answered = {"body": response.get_data(as_text=True), "status": response.status_code,
                    "mimetype": response.mimetype}
        bridge().store.add(f"replay:{request.path}:{token}", answered, REPLAY_TTL)
    return response
