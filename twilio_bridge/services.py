"""What every route needs, built once per app: settings, Rasa client, state store, signature check,
and in WhatsApp's REST mode the durable queue and the background workers that empty it."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from . import metrics
from .config import Settings
from .holding import RasaWaiter
from .jobqueue import JobQueue
from .logs import log
from .rasa_client import Metadata, RasaClient, RasaError
from .security import SignatureCheck
from .state import StateStore
from .workers import LaneWorkers

EXTENSION = "twilio_bridge"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
REPLAY_TTL = 600


@dataclass
class Bridge:
    settings: Settings
    rasa: RasaClient
    store: StateStore
    signatures: SignatureCheck
    queue: JobQueue | None = None
    workers: LaneWorkers | None = None
    waiter: RasaWaiter = field(init=False)

    def __post_init__(self) -> None:
        self.waiter = RasaWaiter(self.ask_rasa, self.store, self.settings.rasa_max_in_flight)

    def ask_rasa(self, sender: str, message: str, metadata: Metadata, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send one message; record Rasa's latency on the log line and in the metrics. Raises RasaError."""
        started = time.monotonic()
        result = "error"
        try:
            items = self.rasa.send(sender, message, metadata, timeout=timeout)
            result = "ok" if items else "empty"
            return items
        except RasaError as exc:
            result = exc.kind
            raise
        finally:
            elapsed = time.monotonic() - started
            metrics.rasa_answered(result, elapsed)
            structlog.contextvars.bind_contextvars(rasa_ms=round(elapsed * 1000))


def bridge() -> Bridge:
    return current_app.extensions[EXTENSION]


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


def answer_every_error(bp: Blueprint, event: str, answer: Callable[[], Response]) -> None:
    """Whatever breaks in a Twilio route is logged as `event`, and Twilio still gets a 2xx, never a 500:
    204 on a status callback, otherwise `answer()` (an apology, and a way forward)."""

    @bp.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response | HTTPException:
        if isinstance(exc, HTTPException):
            return exc
        log.exception(event)
        if request.path.endswith("/status"):
            structlog.contextvars.bind_contextvars(outcome="error")
            return Response(status=204)
        return answer()
