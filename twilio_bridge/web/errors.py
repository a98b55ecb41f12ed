"""Whatever breaks in a Twilio route still gets Twilio an answer it accepts: never a 500."""
from __future__ import annotations

from collections.abc import Callable

import structlog
from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from .. import routes
from ..logs import log
from .hooks import refuse_unsigned, twilio_signed


def answer_every_error(bp: Blueprint, event: str, answer: Callable[[], Response]) -> None:
    """Whatever breaks in a Twilio route is logged as `event`, and Twilio still gets a 2xx, never a 500:
    204 on a status callback, otherwise `answer()` (an apology, and a way forward).

    Only for a request Twilio signed: an error before the signature was verified is a 403, so an
    apology (with its <Dial>) is never what an unsigned request gets."""

    @bp.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response | HTTPException:
        if isinstance(exc, HTTPException):
            return exc
        log.exception(event)
        if not twilio_signed():
            return refuse_unsigned()
        if request.path in (routes.CALL_STATUS, routes.WHATSAPP_STATUS):
            structlog.contextvars.bind_contextvars(outcome="error")
            return Response(status=204)
        return answer()
